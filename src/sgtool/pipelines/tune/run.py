"""`sgtool tune` as a library: Pivotal Tuning Inversion on photos (files or a folder).

    summary = tune_paths("photo.png", TuneSettings(network="G.pkl", latents="inv/photo_latent.npy"))

A single image, or a folder tuned jointly (`joint`, video frames), gives one tuned generator in
`outdir`; a folder tuned image by image gives one subfolder per image (named by its unique stem),
through the batch runner (shards, failures recorded, Ctrl-C finishes the current step and keeps a
checkpoint). Without latents the photos are inverted first (`settings.invert`: PTI's W projection
by default) and each pivot is written beside its tuned generator as NAME_latent.npy, the latent to
edit with it. The engine is `pti.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ...device import resolve_device
from ...errors import SgtoolError
from ...progress import SILENT, Reporter
from ...settings import TuneSettings
from ...utils.batch import Shard
from ..shared.batch import Batch, Item, Result, StopRequest, collect, name_items
from ..shared.images import encoder_input, generator_target, load_square_target, read_image
from ..shared.transforms import TransformTable, stem
from .pti import CHECKPOINT_NAME, TuneTarget, tune_and_save
from ...utils.records import read_json



def read_latents(path, num_ws: int, w_dim: int) -> dict[str, np.ndarray]:
    """Latents from a file (NAME_latent.npy or a stylegan3-editing latents.npy dict) or a folder of
    NAME_latent.npy files (else its latents.npy)."""
    from ...latents import load_latents

    path = Path(path)
    if not path.is_dir():
        return load_latents(path, num_ws, w_dim)
    files = sorted(path.glob("*_latent.npy"))
    if not files:
        if (path / "latents.npy").is_file():
            return load_latents(path / "latents.npy", num_ws, w_dim)
        raise SgtoolError(f"{path} holds no NAME_latent.npy files or latents.npy; run `sgtool invert` first")
    out = {}
    for file in files:
        out.update(load_latents(file, num_ws, w_dim))
    return out


def _crop_entry(image: Path, transforms: TransformTable | None):
    """The alignment.json entry whose unaligned crop `image` is (None for aligned images and .npy tables)."""
    entry = transforms.entry(image.name) if transforms is not None else None
    return entry if entry is not None and entry.crop and stem(entry.crop) == stem(image.name) else None


def find_latent(item: Item, latents: dict[str, np.ndarray], transforms: TransformTable | None = None,
                alone: bool = False) -> np.ndarray:
    """The pivot of one image in a latents table.

    Exact file names first (the unique `item.key` that `sgtool invert` writes into latents.npy, then
    the file's own name, as stylegan3-editing's dicts key it), then stems (the unique `item.name`, as
    NAME_latent.npy files; for a crop, its aligned image's). `alone`: the image is the only input, so
    a table holding one latent is its latent whatever its name.
    """
    exact, by_stem = {}, {}
    for key, value in latents.items():
        exact.setdefault(Path(key).name, value)
        by_stem.setdefault(stem(key), value)
    entry = _crop_entry(item.source, transforms)
    wanted = [(exact, item.key), (exact, item.source.name), (by_stem, item.name)]
    wanted += [(by_stem, stem(entry.name))] if entry is not None else []
    latent = next((table[key] for table, key in wanted if key in table), None)
    if latent is None and alone and len(latents) == 1:
        latent = next(iter(latents.values()))
    if latent is None:
        raise SgtoolError(f"no latent for {item.source.name} in the latents file (it has "
                          f"{', '.join(list(latents)[:3])}{' ...' if len(latents) > 3 else ''})")
    return latent


def _transform_of(item: Item, transforms: TransformTable | None) -> np.ndarray | None:
    if transforms is None:
        return None
    transform = transforms.find(item.source.name)
    if transform is None:
        raise SgtoolError(f"no transform for {item.source.name} in {transforms.source}")
    return transform


def recorded_alignment(latents) -> bool | None:
    """Whether the `sgtool invert` run that wrote `latents` aligned its photos (its invert.json), None when unknown."""
    folder = Path(latents) if Path(latents).is_dir() else Path(latents).parent
    try:
        value = read_json((folder / "invert.json"))["settings"]["align"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, bool) else None


def _target(item: Item, latent: np.ndarray, transform: np.ndarray | None, resolution: int,
            rgb: np.ndarray | None = None) -> TuneTarget:
    image = load_square_target(item.source, resolution) if rgb is None else generator_target(rgb, resolution)
    return TuneTarget(name=item.name, image=image,
                      latent=torch.from_numpy(np.asarray(latent, np.float32)),
                      transform=None if transform is None else torch.from_numpy(transform.astype(np.float32)),
                      source=str(item.source))


def match_targets(images: Sequence[Path], latents: dict[str, np.ndarray], resolution: int,
                  transforms: TransformTable | None = None) -> tuple[list[TuneTarget], list[dict]]:
    """Pair images with their latents and transforms: the targets, and one failure record per image that
    could not be used."""
    targets, failures = [], []
    for item in name_items(images):
        try:
            latent = find_latent(item, latents, transforms, alone=len(images) == 1)
            targets.append(_target(item, latent, _transform_of(item, transforms), resolution))  # aligned crops
        except SgtoolError as exc:
            failures.append({"input": str(item.source), "name": item.name, "error": str(exc)})
    return targets, failures


class _Run:
    """What every tuning run of one command shares: the generator, its inverter, LPIPS, latents, transforms."""

    def __init__(self, settings: TuneSettings, reporter: Reporter):
        from ...losses import load_lpips
        from ..invert.run import check_method, load_models

        self.settings = settings
        self.reporter = reporter
        self.device = resolve_device(settings.device)
        options = settings.invert
        self.inverting = not settings.latents
        uses_encoder = self.inverting and options.method != "optimize"
        if uses_encoder and not settings.encoder:
            raise SgtoolError(f"--method {options.method} needs --encoder CHECKPOINT (or pass --latents "
                              "from `sgtool invert`)")
        # invert's rule: an encoder's decoder is the generator unless --network replaces it.
        encoder = settings.encoder if uses_encoder or not settings.network else None
        self.inverter, self.generator = load_models(encoder, settings.network, self.device, need="tune")
        if uses_encoder:
            check_method(options.method, self.inverter)
        self.generator.eval().requires_grad_(False)
        self.network = str(settings.network) if settings.network else f"{settings.encoder} (decoder)"
        self.transforms = TransformTable.read(settings.transforms) if settings.transforms else None
        self.align = self._aligns(settings)
        self._faces: dict[Path, object] = {}
        # Bad latents are bad input: found before the LPIPS backbone is fetched.
        self.latents = read_latents(settings.latents, self.generator.num_ws, self.generator.w_dim) \
            if settings.latents else None
        self.lpips = load_lpips(settings.lpips_net, self.device, random_backbone=settings.lpips_random_backbone,
                                seed=settings.seed)
        self.projection_lpips = None
        if self.inverting:
            if options.method != "encoder":
                self.projection_lpips = load_lpips("vgg", self.device,
                                                   random_backbone=settings.lpips_random_backbone)
            schedule = "" if options.method == "encoder" else f", {options.projector.recipe} projection schedule"
            reporter.warn(f"no --latents: each image is inverted first (--method {options.method}{schedule})")

    def _aligns(self, settings: TuneSettings) -> bool:
        """Photos are aligned as `sgtool invert` aligns them, unless the inputs are crops already: --no-align,
        --transforms (crops with their transforms) or latents that invert made with --no-align."""
        if not settings.align or settings.transforms is not None:
            return False
        if settings.latents and recorded_alignment(settings.latents) is False:
            self.reporter.note(f"{settings.latents} was inverted from the images as they are (invert.json: align "
                               "false), so they are tuned as they are")
            return False
        return True

    def face(self, item: Item):
        """The photo's largest face (`align.AlignedFace` at the generator's resolution); None without alignment."""
        if not self.align:
            return None
        if item.source not in self._faces:
            from ..align.run import align_image

            faces = align_image(read_image(item.source), size=int(self.generator.img_resolution),
                                recipe=self.settings.align_recipe, max_faces=1)
            if not faces:
                raise SgtoolError(f"{item.source}: no face found; pass --no-align if it is already an aligned crop")
            self._faces[item.source] = faces[0]
        return self._faces[item.source]

    def target(self, item: Item, outdir: Path, stop: StopRequest | None = None,
               alone: bool = False) -> TuneTarget | None:
        """The item's target (with alignment: its face's unaligned crop through the landmarks transform on
        StyleGAN3, the aligned crop on StyleGAN2); None when `stop` was requested while it was being inverted."""
        face = self.face(item)
        if face is None:
            transform, rgb = _transform_of(item, self.transforms), None  # a missing transform fails before inverting
        elif self.generator.kind == "stylegan3":
            transform, rgb = np.asarray(face.inverse_transform, np.float32), face.crop
        else:
            transform, rgb = None, face.aligned
        if self.latents is not None:
            latent = find_latent(item, self.latents, self.transforms, alone)
        else:
            latent = self.pivot(item, outdir, stop)
            if latent is None:
                return None
        return _target(item, latent, transform, self.generator.img_resolution, rgb)

    @staticmethod
    def pivot_file(name: str, outdir: Path) -> Path:
        return Path(outdir) / f"{name}_latent.npy"

    def pivot(self, item: Item, outdir: Path, stop: StopRequest | None) -> np.ndarray | None:
        """Invert the image (a crop through its aligned image) into outdir/NAME_latent.npy. An interrupted
        run's pivot is reused when it resumes: the checkpoint belongs to that pivot."""
        from ...latents import load_latents
        from ...utils.io import save_npy
        from ..invert.run import invert_target

        path = self.pivot_file(item.name, outdir)
        resuming = self.settings.resume is not False and (Path(outdir) / CHECKPOINT_NAME).is_file()
        if resuming and path.is_file():
            return next(iter(load_latents(path, self.generator.num_ws, self.generator.w_dim).values()))
        options = self.settings.invert
        face = self.face(item)
        if face is not None:
            aligned = face.aligned
        else:
            entry = _crop_entry(item.source, self.transforms)
            aligned = read_image(Path(entry.aligned_path) if entry is not None and entry.aligned_path else item.source)
            if aligned.shape[0] != aligned.shape[1]:
                raise SgtoolError(f"{item.source} is {aligned.shape[1]}x{aligned.shape[0]}, not square; give the "
                                  "aligned image or the unaligned crop that `sgtool align` writes (or drop --no-align)")
        projecting = options.method != "encoder"
        self.reporter.start(f"inverting {item.name}", options.project_steps if projecting else None)

        def on_step(_step) -> bool:
            self.reporter.advance()
            return stop is not None and stop.requested

        try:
            result = invert_target(generator_target(aligned, self.generator.img_resolution).to(self.device),
                                   options.method, generator=self.generator, encoder=self.inverter,
                                   steps=options.encoder_steps, num_steps=options.project_steps,
                                   space=options.space, l2_weight=options.l2_weight, seed=self.settings.seed,
                                   lpips_model=self.projection_lpips, projector=options.projector,
                                   encoder_target=encoder_input(aligned) if self.inverter else None,
                                   callback=on_step)
        finally:
            self.reporter.finish()
        if stop is not None and stop.requested:
            return None  # a projection cut short is no pivot
        latent = result.latents.detach().cpu().numpy().astype(np.float32)
        save_npy(latent, path)
        return latent

    def tune(self, targets: list[TuneTarget], outdir: Path, stop: StopRequest, label: str,
             report_extra: dict | None = None) -> dict:
        s = self.settings
        self.reporter.start(f"tuning {label}", s.steps)
        try:
            summary = tune_and_save(self.generator, targets, s, outdir, network=self.network,
                                    export_pkl=s.export_pkl, resume=s.resume, lpips_model=self.lpips,
                                    device=self.device, should_stop=stop,
                                    on_step=lambda r: self.reporter.advance(
                                        info=f"lpips {r['lpips']:.4f} mse {r['mse']:.5f}"),
                                    on_resume=lambda step: self._resumed(label, outdir, step),
                                    extra_config={"kernels": s.kernels, "device": str(self.device)},
                                    report_extra=report_extra)
        finally:
            self.reporter.finish()
        summary.pop("generator", None)
        return summary

    def _resumed(self, label: str, outdir: Path, step: int) -> None:
        self.reporter.note(f"tuning {label}: resuming from {outdir / CHECKPOINT_NAME} at step {step}")
        self.reporter.advance(step)


def tune_paths(inputs, settings: TuneSettings, shard: Shard | None = None, reporter: Reporter = SILENT) -> dict:
    """Tune on an image or a folder; returns the tune.json summary (with `exit_code`)."""
    inputs = Path(inputs)
    if not inputs.exists():
        raise SgtoolError(f"{inputs} does not exist; give an image file or a folder of images")
    per_image = inputs.is_dir() and not settings.joint
    if shard is not None and not per_image:
        raise SgtoolError("--shard splits a folder tuned image by image; a joint run or a single image is one job")
    batch = Batch("tune", collect([inputs]), settings.outdir, shard, reporter)
    run = _Run(settings, reporter)
    return _tune_each(batch, run) if per_image else _tune_together(batch, run)


def _tune_together(batch: Batch, run: _Run) -> dict:
    """One generator for every image (a single image, or a joint run) in outdir itself."""
    outdir = batch.outdir
    alone = len(batch.all_items) == 1
    targets, failed = [], []
    for item in batch.items:
        try:
            targets.append(run.target(item, outdir, alone=alone))
        except SgtoolError as exc:
            if alone:
                raise
            failed.append({"input": str(item.source), "name": item.name, "error": str(exc)})
            batch.reporter.warn(f"failed: {item.source}: {exc}")
    if not targets:
        raise SgtoolError(f"no usable image among the {len(batch.items)} inputs: {failed[0]['error']}")
    extra = {"failed": failed}
    if run.inverting:
        extra["latents"] = [str(run.pivot_file(t.name, outdir)) for t in targets]
    with batch.stop.installed():
        summary = run.tune(targets, outdir, batch.stop, "joint" if len(targets) > 1 else targets[0].name, extra)
    summary["exit_code"] = 130 if summary["status"] == "interrupted" else (1 if failed else 0)
    return summary


def _tune_each(batch: Batch, run: _Run) -> dict:
    """One generator per image, in outdir/NAME/ (NAME: the image's unique stem), through the batch runner."""
    def process(item: Item) -> dict | Result:
        outdir = batch.outdir / item.name
        target = run.target(item, outdir, batch.stop, alone=len(batch.all_items) == 1)
        if target is None:
            return Result(item, "not_run", error="interrupted while inverting")
        pivots = [str(run.pivot_file(item.name, outdir))] if run.inverting else []
        summary = run.tune([target], outdir, batch.stop, item.name)
        if summary["status"] == "interrupted":
            return Result(item, "not_run", outputs=[summary["checkpoint"], *pivots],
                          error=f"interrupted after step {summary['steps_done']}; run the same command to resume")
        image = summary["images"][0]
        outputs = [*pivots, *summary["outputs"].values(), image["before_image"], image["after_image"],
                   str(outdir / "tune.json")]
        return {"outputs": outputs, "outdir": summary["outdir"], "steps_done": summary["steps_done"],
                "stopped_early": summary["stopped_early"], "resumed_from_step": summary["resumed_from_step"],
                "transform": image["transform"], "before": image["before"], "after": image["after"]}

    report = batch.run(process, label="tune")
    summary = report.write("tune.json", run.settings.record(), network=run.network)
    return {**summary, "exit_code": report.exit_code}
