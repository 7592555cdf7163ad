"""`sgtool edit` as a library: edit W+ latents or whole photos and render them (aligned or unaligned), with
sweeps of strengths.

    settings = EditSettings(network="stylegan3-r-ffhq-1024x1024.pkl", edits=["age=+2"], outdir="out/edit")
    summary = run_edit(plan_edit(["out/invert/photo_latent.npy"], settings))   # what `sgtool edit` does

    request = prepare_edits(G, EditOptions(edits=["age=+2"]), generator_hint(network, G))  # in your own loop
    image = render(G, request.apply(ws), transform=inverse_transform)

Requests live in `requests`, sweeps and grids in `sweeps`, text prompts in `texts`, whole photos in `photo`;
this module plans a run and edits a batch of latent files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ...device import resolve_device
from ...editing import stylespace
from ...editing.directions import generator_hint
from ...errors import SgtoolError
from ...latents import latent_stem, load_latents
from ...models import builtin_model_warning, load_generator
from ...progress import SILENT, Reporter
from ...settings import EditSettings
from ...utils.batch import Shard
from ...utils.io import save_image, save_npy, to_uint8
from ..shared.batch import IMAGE_SUFFIXES, LATENT_SUFFIXES, Batch, Item, Result, collect
from ..shared.render import device_of
from ..shared.transforms import TransformTable
from .photo import PHOTO_RECORD, edit_photos, recorded_run, resume_settings
from .regions import face_part_name
from .requests import EditRequest, edit_and_render, prepare_request
from .sweeps import sweep_row, sweep_tag, write_animation, write_sweep_grid
from .texts import TextPrompts, encode_prompts


@dataclass
class EditPlan:
    """One `sgtool edit` run, checked before anything loads: its latent files (task "edit") or photos (task
    "photo", edited whole by `photo.py`) and, for unaligned renders, the --transforms table."""

    task: str
    settings: EditSettings
    latents: list[Path] = field(default_factory=list)
    shard: Shard | None = None
    transforms: TransformTable | None = None
    photos: list[Path] = field(default_factory=list)


def plan_edit(latents: Sequence[str | Path], settings: EditSettings, shard: Shard | None = None,
              given_keys: frozenset[str] = frozenset()) -> EditPlan:
    """Check the inputs and settings of an edit; bad usage fails here (nothing loaded or written).

    Inputs are latent files, or photos (edited whole), or a folder an earlier photo run wrote (its photos
    again, with its models and inversion settings unless `given_keys`, the settings given now, say otherwise).
    """
    if settings.crossover:
        from .crossover import check_crossover

        check_crossover([Path(path) for path in latents], settings)
        return EditPlan("crossover", settings, photos=[Path(path) for path in latents])
    if not (settings.edits or settings.styles or settings.texts or settings.sweep or settings.scribble):
        raise SgtoolError("nothing to do: give --edit NAME=STRENGTH, --style LAYER:CHANNEL=STRENGTH, --text PROMPT "
                          "or --sweep NAME=START:STOP:COUNT (style mixing is `sgtool mix`; finding directions "
                          "is `sgtool directions`)")
    if not latents:
        raise SgtoolError("give the latent files to edit (or photos): sgtool edit out/invert/*_latent.npy --edit age=+2")
    recorded = [recorded_run(Path(path)) if Path(path).is_dir() else None for path in latents]
    if any(recorded):
        if len(latents) != 1:
            folder = next(path for path, record in zip(latents, recorded) if record)
            raise SgtoolError(f"{folder} is the folder of an earlier photo run: give it alone to edit its photos again")
        settings = resume_settings(recorded[0], settings, given_keys, Path(latents[0]) / PHOTO_RECORD)
        if "outdir" not in given_keys:
            settings = settings.model_copy(update={"outdir": Path(latents[0])})
        latents = recorded[0]["photos"]
    for path in map(Path, latents):
        if path.is_dir() and any(p.suffix.lower() in LATENT_SUFFIXES for p in path.iterdir()):
            raise SgtoolError(f"{path} is a directory; give the latent files in it "
                              f"('{path}/*_latent.npy', quoted) or the latents.npy dict that sgtool invert wrote there")
    files = collect(latents, LATENT_SUFFIXES | IMAGE_SUFFIXES, "latent or photo")
    photos = [path for path in files if path.suffix.lower() in IMAGE_SUFFIXES]
    if photos:
        if len(photos) != len(files):
            raise SgtoolError("give photos or latent files, not both, in one call")
        if not settings.encoder and (settings.invert.method != "optimize" or settings.network is None):
            raise SgtoolError("photo inputs are inverted first: pass --encoder (a ReStyle, pSp, e4e or HyperStyle "
                              "checkpoint or registry name), or --method optimize with --network")
        return EditPlan("photo", settings, [], shard, None, photos)
    if settings.encoder:
        raise SgtoolError("--encoder is for photo inputs (inverted first); latent files are edited with --network "
                          "(an encoder checkpoint there renders with its decoder)")
    if settings.network is None:
        raise SgtoolError("give --network: the generator the latents belong to (a tuned one too)")
    if face_part_name(settings.region):
        raise SgtoolError(f"--region {settings.region} names a face part, found from a photo's landmarks: edit the "
                          "photo, or give a latent a region image over its render")
    if settings.sweep and shard is not None:
        raise SgtoolError("--sweep draws one grid of every input; run sweeps without --shard")
    transforms = None
    if settings.transforms is not None and not settings.aligned:
        transforms = TransformTable.read(settings.transforms)
    return EditPlan("edit", settings, files, shard, transforms)


def random_weights_warning(plan: EditPlan) -> str | None:
    """The warning to show when the generator is a built-in random-weight test model (None otherwise)."""
    return builtin_model_warning(plan.settings.network, "edits")


def run_edit(plan: EditPlan, reporter: Reporter = SILENT, generator=None) -> dict:
    """Edit the planned latent files or photos; returns the summary also written to OUTDIR (edits.json).
    `generator`: an already loaded network instead of settings.network."""
    settings = plan.settings
    if plan.task == "crossover":
        from .crossover import run_crossover

        return run_crossover(plan.photos, settings, reporter, generator)
    prompts = encode_prompts(settings)  # missing CLIP files fail before any generator loads
    if plan.task == "photo":
        from ..invert.run import load_models

        encoder, decoder = load_models(settings.encoder, settings.network, resolve_device(settings.device),
                                       w_encoder=settings.w_encoder, need="editing photos", feature_space=True)
        generator = generator if generator is not None else decoder
        request = prepare_request(generator, settings, generator_hint(settings.network or settings.encoder,
                                                                      generator), prompts)
        return edit_photos(plan.photos, settings, generator, encoder, request, plan.shard, reporter)
    if generator is None:
        generator = load_generator(settings.network, device=resolve_device(settings.device))
    return edit_latents(plan, generator, reporter, prompts)


def edit_latents(plan: EditPlan, generator, reporter: Reporter = SILENT, prompts: TextPrompts | None = None) -> dict:
    """Edit every latent of the plan's files into OUTDIR; returns the edits.json summary.

    One batch item per latent file (the entries of a stylegan3-editing dict are its `entries`); a bad
    file is recorded and the batch goes on, a lone bad file raises. With --sweep, one grid of all
    latents (one row each) is written at the end.
    """
    settings = plan.settings
    if plan.transforms is not None and generator.kind != "stylegan3":
        raise SgtoolError("--transforms needs a StyleGAN3 network (StyleGAN2 has no input transform); drop "
                          "--transforms or pass --aligned")
    request = prepare_request(generator, settings, generator_hint(settings.network, generator), prompts)
    batch = Batch("edit", plan.latents, settings.outdir, plan.shard, reporter, stem=latent_stem)
    editor = _LatentFileEditor(generator, request, plan, {item.name for item in batch.all_items})
    report = batch.run(editor)
    grid = str(write_sweep_grid(editor.rows, request, settings.outdir)) if editor.rows else None
    summary = report.write("edits.json", settings.record(), network=str(settings.network),
                           direction_set=request.direction_set, **request.records(), grid=grid,
                           animations=editor.animations)
    return {**summary, "exit_code": report.exit_code}


def output_stem(key: str) -> str:
    """A stylegan3-editing dict key (an image file name such as '0001.jpg') as a file-name stem."""
    stem = key[: -len(Path(key).suffix)] if Path(key).suffix.lower() in IMAGE_SUFFIXES else key
    return stem.replace("/", "_").replace("\\", "_") or "latent"


class _LatentFileEditor:
    """Edits one latent file per call (a Batch item): its images, latents, sweep rows and animations."""

    def __init__(self, generator, request: EditRequest, plan: EditPlan, item_names: set[str]):
        self.generator, self.request, self.settings = generator, request, plan.settings
        self.transforms = plan.transforms
        self.item_names = item_names
        self.outdir = Path(plan.settings.outdir)
        self.rows: list[list[np.ndarray]] = []
        self.animations: list[str] = []
        self._entry_stems: set[str] = set()
        self._beside: dict[Path, TransformTable | None] = {}  # invert.json per folder, read once
        self._editors: dict[str, torch.nn.Module] = {}  # SFE feature editors by file

    def __call__(self, item: Item) -> dict | Result:
        G = self.generator
        latents = load_latents(item.source, G.num_ws, G.w_dim, self.settings.step)
        if list(latents) == [latent_stem(item.source)]:  # one NAME_latent.npy: named as its batch item
            entries = [(item.name, None, latents[latent_stem(item.source)])]
        else:
            entries = [(output_stem(key), key, latent) for key, latent in latents.items()]
        records, outputs, errors = [], [], []
        for stem, key, latent in entries:
            try:
                record = self._edit(item, stem, key, latent)
            except SgtoolError as exc:
                errors.append(str(exc) if key is None else f"{key}: {exc}")
                records.append({"name": stem, "key": key, "error": str(exc)})
                continue
            outputs += record.pop("outputs")
            records.append(record)
        if len(errors) == len(entries):
            raise SgtoolError(errors[0] if len(errors) == 1 else f"every latent failed, first {errors[0]}")
        if errors:
            return Result(item, "failed", outputs, "; ".join(errors), {"entries": records})
        return {"outputs": outputs, "entries": records}

    def _edit(self, item: Item, stem: str, key: str | None, latent: np.ndarray) -> dict:
        if key is not None:
            if stem in self._entry_stems or (stem in self.item_names and stem != item.name):
                raise SgtoolError(f"another input is also named {stem!r}, so their outputs would overwrite each "
                                  "other; edit them into different --outdir folders")
            self._entry_stems.add(stem)
        request, settings = self.request, self.settings
        transform = self._transform(item, key)
        ws = torch.from_numpy(latent).to(device_of(self.generator))[None]
        record: dict = {"name": stem, **({"key": key} if key is not None else {}),
                        "transform": transform.tolist() if transform is not None else None}
        outputs: list[str] = []
        saved = self._saved_features(item) if key is None else None
        if saved is not None:
            record["feature_space"] = True
        if request.edits or request.style_edits or request.texts is not None or settings.scribble is not None:
            written = self._write_feature_edit(ws, stem, saved) if saved is not None else \
                self._write_edited(ws, stem, transform)
            record.update(written)
            outputs += written.values()
        if request.sweep_strengths is not None:
            row = sweep_row(self.generator, ws, request, transform, settings.batch_size) if saved is None else \
                [to_uint8(self._feature_edit(ws, saved, request.swept(s))[0])[0] for s in request.sweep_strengths]
            self.rows.append(row)
            if settings.animate:
                video = str(write_animation(row, self.outdir / f"{stem}_{sweep_tag(request)}.mp4", settings.fps))
                self.animations.append(video)
                record["animation"] = video
                outputs.append(video)
        return {**record, "outputs": outputs}

    def _transform(self, item: Item, key: str | None) -> np.ndarray | None:
        """inv(T) to render the unaligned view: from --transforms (required), else the invert.json beside the
        latents (when it has one); StyleGAN2 and --aligned render aligned."""
        if self.settings.aligned or self.generator.kind != "stylegan3":
            return None
        name = key if key is not None else item.source
        if self.transforms is not None:
            return self.transforms.require(name, "pass --aligned to render the aligned view", latent=True)
        folder = item.source.parent
        if folder not in self._beside:
            self._beside[folder] = TransformTable.beside(item.source)
        table = self._beside[folder]
        return table.find(name) if table is not None else None

    def _saved_features(self, item: Item):
        """The SFE features beside a NAME_latent.npy (None without them, or with feature_edits off)."""
        path = item.source.parent / f"{latent_stem(item.source)}_features.safetensors"
        if not self.settings.feature_edits or not path.is_file():
            return None
        from ...models.encoders.sfe import read_features

        if self.settings.region is not None or self.settings.scribble is not None:
            raise SgtoolError(f"{path}: --region and --scribble optimise the W+ code under masked losses, which a "
                              "feature-space inversion's features cannot follow; add --set feature_edits=false")
        return read_features(path, self.generator)

    def _feature_edit(self, ws: torch.Tensor, saved, request: EditRequest):
        """(image, edited code, F') through the feature editor of the SFE file the features came from."""
        from ...models.encoders.sfe import load_feature_editor
        from .features import feature_edit

        if saved.editor not in self._editors:
            if not Path(saved.editor).is_file():
                raise SgtoolError(f"{saved.editor}, the StyleFeatureEditor file these features came from, is not "
                                  "there; put it back, or edit the W+ code alone with --set feature_edits=false")
            self._editors[saved.editor] = load_feature_editor(saved.editor, device_of(self.generator))
        return feature_edit(self._editors[saved.editor], self.generator, saved, ws, request)

    def _write_feature_edit(self, ws: torch.Tensor, stem: str, saved) -> dict[str, str]:
        """The edit through SFE's feature editor: the image, the edited code (W+ or S) and its F'
        (NAME_LABEL_feature.safetensors)."""
        from safetensors.torch import save_file

        from ...utils.io import atomic_path

        image, code, feature = self._feature_edit(ws, saved, self.request)
        base = self.outdir / f"{stem}_{self.request.label}"
        with atomic_path(f"{base}_feature.safetensors") as tmp:
            save_file({"features": feature[0].cpu().contiguous()}, str(tmp),
                      metadata={"editor": saved.editor, "layer": saved.layer.name})
        written = {"image": str(save_image(to_uint8(image)[0], f"{base}.png")),
                   "feature": f"{base}_feature.safetensors"}
        if isinstance(code, torch.Tensor):
            written["latent"] = str(save_npy(code[0].cpu().numpy().astype(np.float32), f"{base}.npy"))
        else:
            written["styles"] = str(stylespace.save_s(f"{base}_styles.npz", self.generator, code))
        return written

    def _write_edited(self, ws: torch.Tensor, stem: str, transform) -> dict[str, str]:
        request = self.request
        if self.settings.region is not None or self.settings.scribble is not None:
            from .local import write_local_edit

            return write_local_edit(self.generator, ws, request, self.settings, self.outdir / stem, transform)
        images, code = edit_and_render(self.generator, ws, request, transform)
        base = self.outdir / f"{stem}_{request.label}"
        written = {"image": str(save_image(to_uint8(images)[0], f"{base}.png"))}
        if isinstance(code, torch.Tensor):
            written["latent"] = str(save_npy(code[0].cpu().numpy().astype(np.float32), f"{base}.npy"))
        else:  # W+ cannot express a style-channel or text edit: keep the edited S instead
            written["styles"] = str(stylespace.save_s(f"{base}_styles.npz", self.generator, code))
        return written
