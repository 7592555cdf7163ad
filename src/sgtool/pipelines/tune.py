"""`sgtool tune` as a library: Pivotal Tuning Inversion on photos (files or a folder).

    summary = tune_paths("photo.png", TuneSettings(network="G.pkl", latents="inv/photo_latent.npy"))

A single image, or a folder tuned jointly (`joint`, video frames), gives one tuned generator in
`outdir`; a folder tuned image by image gives one subfolder per image (named by its unique stem),
through the batch runner (shards, failures recorded, Ctrl-C finishes the current step and keeps a
checkpoint). Without latents the photos are inverted first (`settings.invert`: PTI's W projection
by default). The engine is `pipelines.pti`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..device import resolve_device
from ..errors import SgtoolError
from ..progress import SILENT, Reporter
from ..settings import TuneSettings
from ..utils.batch import Shard
from .batch import Batch, Item, Result, StopRequest, collect
from .images import encoder_input, load_square_target, read_image
from .memory import activation_checkpointing
from .pti import (CHECKPOINT_NAME, PivotalTuner, TuneResult, TuneTarget, evaluate, plot_loss_curve,
                  tunable_parameters, tune_and_save)
from .transforms import TransformTable, stem

__all__ = ["CHECKPOINT_NAME", "PivotalTuner", "TuneResult", "TuneSettings", "TuneTarget", "activation_checkpointing",
           "evaluate", "invert_for_tuning", "match_targets", "plot_loss_curve", "read_latents", "tunable_parameters",
           "tune_and_save", "tune_paths"]


def read_latents(path, num_ws: int, w_dim: int) -> dict[str, np.ndarray]:
    """Latents from a file (NAME_latent.npy or a stylegan3-editing latents.npy dict) or a folder of
    NAME_latent.npy files (else its latents.npy)."""
    from ..latents import load_latents

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


def _aligned_of(image: Path, transforms: TransformTable | None) -> str | None:
    """The aligned image an unaligned crop was cut beside (alignment.json), whose latent the crop shares."""
    entry = transforms.entry(image.name) if transforms is not None else None
    return entry.name if entry is not None and entry.crop and stem(entry.crop) == stem(image.name) else None


def match_target(item: Item, latents: dict[str, np.ndarray], resolution: int,
                 transforms: TransformTable | None = None, alone: bool = False) -> TuneTarget:
    """Pair one image with its latent (by stem; a crop also by its aligned image) and its transform.

    `alone`: the image is the only input, so a latents file holding one latent is its latent whatever its name.
    """
    by_stem = {stem(key): value for key, value in latents.items()}
    keys = [stem(item.source.name)] + ([stem(a)] if (a := _aligned_of(item.source, transforms)) else [])
    latent = next((by_stem[k] for k in keys if k in by_stem), None)
    if latent is None and alone and len(latents) == 1:
        latent = next(iter(latents.values()))
    if latent is None:
        raise SgtoolError(f"no latent for {item.source.name} in the latents file (it has "
                          f"{', '.join(list(latents)[:3])}{' ...' if len(latents) > 3 else ''})")
    transform = transforms.find(item.source.name) if transforms is not None else None
    if transforms is not None and transform is None:
        raise SgtoolError(f"no transform for {item.source.name} in {transforms.source}")
    return TuneTarget(name=item.name, image=load_square_target(item.source, resolution),
                      latent=torch.from_numpy(np.asarray(latent, np.float32)),
                      transform=None if transform is None else torch.from_numpy(transform.astype(np.float32)),
                      source=str(item.source))


def match_targets(images: Sequence[Path], latents: dict[str, np.ndarray], resolution: int,
                  transforms: TransformTable | None = None) -> tuple[list[TuneTarget], list[dict]]:
    """match_target for every image: the targets, and one failure record per image that could not be used."""
    from .batch import name_items

    targets, failures = [], []
    for item in name_items(images):
        try:
            targets.append(match_target(item, latents, resolution, transforms, alone=len(images) == 1))
        except SgtoolError as exc:
            failures.append({"input": str(item.source), "name": item.name, "error": str(exc)})
    return targets, failures


def invert_for_tuning(items: Sequence[Item], generator, settings: TuneSettings, inverter=None,
                      transforms: TransformTable | None = None, device="cpu", lpips_model=None) -> dict[str, np.ndarray]:
    """Pivot latents (keyed by image file name) when none were given, through invert's `invert_target`.

    Inversion works on aligned faces: for an unaligned crop listed in alignment.json, its aligned image
    is inverted (the crop stays the tuning target).
    """
    from .invert import invert_target

    options = settings.invert
    latents = {}
    for item in items:
        entry = transforms.entry(item.source.name) if transforms is not None else None
        source = Path(entry.aligned_path) if entry is not None and entry.aligned_path and entry.crop else item.source
        target = load_square_target(source, generator.img_resolution).to(device)
        encoder_target = encoder_input(read_image(source)) if inverter is not None else None
        result = invert_target(target, options.method, generator=generator, encoder=inverter,
                               steps=options.encoder_steps, num_steps=options.project_steps, space=options.space,
                               l2_weight=options.l2_weight, seed=settings.seed, lpips_model=lpips_model,
                               encoder_target=encoder_target, projector=options.projector)
        latents[item.source.name] = result.latents.detach().cpu().numpy()
    return latents


class _Run:
    """What every tuning run of one command shares: the generator, its inverter, LPIPS, latents, transforms."""

    def __init__(self, settings: TuneSettings, reporter: Reporter):
        from ..losses import load_lpips
        from .invert import load_encoder, load_models

        self.settings = settings
        self.reporter = reporter
        self.device = resolve_device(settings.device)
        inverting = not settings.latents
        if inverting and settings.invert.method != "optimize" and not settings.encoder:
            raise SgtoolError(f"--method {settings.invert.method} needs --encoder CHECKPOINT (or pass --latents "
                              "from `sgtool invert`)")
        if not settings.network and not (inverting and settings.encoder and settings.invert.method != "optimize"):
            raise SgtoolError("--network is required: the generator the latents were inverted with (or --encoder, "
                              "whose decoder is tuned, when inverting here)")
        self.inverter = None
        if settings.network:
            self.inverter, self.generator = load_models(None, settings.network, self.device)
            if inverting and settings.encoder and settings.invert.method != "optimize":
                self.inverter = load_encoder(settings.encoder, self.device, network=self.generator)
            self.network = str(settings.network)
        else:
            self.inverter, self.generator = load_models(settings.encoder, None, self.device)
            self.network = f"{settings.encoder} (decoder)"
        self.generator.eval().requires_grad_(False)
        self.transforms = TransformTable.read(settings.transforms) if settings.transforms else None
        self.lpips = load_lpips(settings.lpips_net, self.device, random_backbone=settings.lpips_random_backbone,
                                seed=settings.seed)
        self.latents = read_latents(settings.latents, self.generator.num_ws, self.generator.w_dim) \
            if settings.latents else None
        self.projection_lpips = None

    def latents_for(self, items: Sequence[Item]) -> dict[str, np.ndarray]:
        if self.latents is not None:
            return self.latents
        if self.projection_lpips is None and self.settings.invert.method != "encoder":
            from ..losses import load_lpips

            self.projection_lpips = load_lpips("vgg", self.device, random_backbone=self.settings.lpips_random_backbone)
        self.reporter.warn(f"no --latents: inverting {len(items)} image(s) first (--method "
                           f"{self.settings.invert.method})")
        return invert_for_tuning(items, self.generator, self.settings, self.inverter, self.transforms, self.device,
                                 self.projection_lpips)

    def tune(self, targets: list[TuneTarget], outdir: Path, stop: StopRequest, label: str) -> dict:
        s = self.settings
        self.reporter.start(f"tuning {label}", s.steps)
        try:
            summary = tune_and_save(self.generator, targets, s, outdir, network=self.network,
                                    export_pkl=s.export_pkl, resume=s.resume, lpips_model=self.lpips,
                                    device=self.device, should_stop=stop,
                                    on_step=lambda r: self.reporter.advance(
                                        info=f"lpips {r['lpips']:.4f} mse {r['mse']:.5f}"),
                                    extra_config={"kernels": s.kernels, "device": str(self.device)})
        finally:
            self.reporter.finish()
        summary.pop("generator", None)
        return summary


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
    if per_image:
        return _tune_each(batch, run)
    latents = run.latents_for(batch.items)
    targets, failed = [], []
    for item in batch.items:
        try:
            targets.append(match_target(item, latents, run.generator.img_resolution, run.transforms,
                                        alone=len(batch.all_items) == 1))
        except SgtoolError as exc:
            if len(batch.items) == 1:
                raise
            failed.append({"input": str(item.source), "name": item.name, "error": str(exc)})
            reporter.warn(f"failed: {item.source}: {exc}")
    if not targets:
        raise SgtoolError(f"no usable image in {inputs}: {failed[0]['error']}")
    stop = StopRequest(reporter)
    with stop.installed():
        summary = run.tune(targets, Path(settings.outdir), stop, "joint" if len(targets) > 1 else targets[0].name)
    summary["failed"] = failed
    if summary["status"] == "done":
        from ..utils.io import write_json

        write_json(summary, Path(settings.outdir) / "tune.json")
    summary["exit_code"] = 130 if summary["status"] == "interrupted" else (1 if failed else 0)
    return summary


def _tune_each(batch: Batch, run: _Run) -> dict:
    def process(item: Item) -> dict | Result:
        target = match_target(item, run.latents_for([item]), run.generator.img_resolution, run.transforms)
        summary = run.tune([target], batch.outdir / item.name, batch.stop, item.name)
        if summary["status"] == "interrupted":
            return Result(item, "not_run", outputs=[summary["checkpoint"]],
                          error=f"interrupted after step {summary['steps_done']}; run the same command to resume")
        return {"outputs": list(summary["outputs"].values()), "steps_done": summary["steps_done"],
                "mean_before": summary["mean_before"], "mean_after": summary["mean_after"],
                "outdir": summary["outdir"], "stopped_early": summary["stopped_early"]}

    report = batch.run(process, label="tune")
    summary = report.write("tune.json", run.settings.record(), network=run.network)
    return {**summary, "exit_code": report.exit_code}
