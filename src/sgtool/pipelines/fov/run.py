"""`sgtool expand-fov` as a library: latent files and photos (inverted first) through the batch runner, or one
clip through the video stages (`video.py`); the tiling itself is `tiles.py`.

    summary = run_expand_fov(["lat.npy"], ExpandFovSettings(network="G.pkl", all=64, outdir="out/fov"))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...device import resolve_device
from ...errors import SgtoolError
from ...latents import latent_stem, load_latents
from ...progress import SILENT, Reporter
from ...settings import ExpandFovSettings
from ...utils.batch import Shard
from ...utils.io import save_image, save_npy
from ..shared.batch import IMAGE_SUFFIXES, LATENT_SUFFIXES, VIDEO_SUFFIXES, Batch, Item, collect
from ..edit.requests import prepare_edits
from ..edit.run import output_stem
from ..edit.texts import encode_prompts
from ..shared.transforms import TransformTable

from .tiles import Margins, expand_fov, require_stylegan3
from .video import expand_video


def run_expand_fov(paths, settings: ExpandFovSettings, shard: Shard | None = None, reporter: Reporter = SILENT,
                   finder=None) -> dict:
    """Expand latent files and photos (a batch: expand_fov.json), or one clip (fov.mp4); returns the summary."""
    inputs = collect(paths, IMAGE_SUFFIXES | LATENT_SUFFIXES | VIDEO_SUFFIXES, "photo, latent or video")
    if any(path.suffix.lower() in VIDEO_SUFFIXES for path in inputs):
        if len(inputs) != 1:
            raise SgtoolError("give one video alone to expand-fov (without photos, latents or other videos)")
        if shard is not None:
            raise SgtoolError("--shard splits batches of photos or latents; a video is expanded as one job")
        return expand_video(inputs[0], settings, reporter, finder)
    return expand_batch(inputs, settings, shard, reporter)


@dataclass
class FovSource:
    """One thing to expand: its output name, its code and the input transform of its plain render."""

    name: str
    code: torch.Tensor | dict  # W+ [num_ws, w_dim], or S (a batch of one) once edited in StyleSpace
    base_transform: torch.Tensor | None = None
    key: str | None = None  # its key in a stylegan3-editing latents dict


def write_expanded(generator, source: FovSource, margins: Margins, outdir, overlap: float = 0.5,
                   feather: int | None = None, on_tile=None) -> dict:
    """Expand one latent and write NAME_fov.png plus NAME_fov.npy (the tile transforms, [n_tiles, 3, 3])."""
    outdir = Path(outdir)
    canvas, tiles = expand_fov(generator, source.code, margins, source.base_transform, overlap, feather,
                               on_tile)
    image_path = save_image(canvas, outdir / f"{source.name}_fov.png")
    transforms = np.stack([t.transform.numpy() for t in tiles]).astype(np.float32)
    transforms_path = save_npy(transforms, outdir / f"{source.name}_fov.npy")
    return {"name": source.name, **({"key": source.key} if source.key else {}), "image": str(image_path),
            "tile_transforms": str(transforms_path), "tile_offsets": [list(t.offset) for t in tiles],
            "size": [int(canvas.shape[2]), int(canvas.shape[1])], "unaligned": source.base_transform is not None}


def _input_stem(path: Path) -> str:
    return latent_stem(path) if path.suffix.lower() in LATENT_SUFFIXES else path.stem


def expand_batch(inputs: list[Path], settings: ExpandFovSettings, shard: Shard | None = None,
                 reporter: Reporter = SILENT) -> dict:
    """Expand latent files and photos into `settings.outdir`; photos are inverted first (their latents go
    to OUTDIR/inversion/) and expanded through their own alignment's transform."""
    from ..invert.run import check_method, invert_faces, load_models, prepare_face, projection_lpips

    margins = Margins(*settings.margins())
    if margins == Margins():
        raise SgtoolError("nothing to expand: give --left/--right/--top/--bottom or --all in pixels")
    photos = [p for p in inputs if p.suffix.lower() in IMAGE_SUFFIXES]
    if settings.latent is not None and (len(photos) != 1 or len(inputs) != 1):
        raise SgtoolError("--latent is the latent of one photo input: give that photo alone (latent files are "
                          "inputs themselves)")
    invert = bool(photos) and settings.latent is None
    device = resolve_device(settings.device)
    if invert and settings.invert.method != "optimize" and not settings.encoder:
        raise SgtoolError("a photo is inverted first: pass --encoder (a ReStyle checkpoint or registry name), or "
                          "--method optimize with --network")
    prompts = encode_prompts(settings)  # CLIP and direction files fail before the models load
    encoder, generator = load_models(settings.encoder, settings.network, device, need="expand-fov")
    if invert:
        check_method(settings.invert.method, encoder)
    require_stylegan3(generator)
    margins.check(generator.img_resolution)
    expander = _Expander(generator, settings, margins, reporter, prompts)
    batch = Batch("expand-fov", inputs, settings.outdir, shard, reporter, stem=_input_stem)
    expander.item_names = {item.name for item in batch.all_items}
    lpips_model = projection_lpips(settings.invert, device) if invert else None

    def prepare(item: Item):
        if item.source.suffix.lower() in IMAGE_SUFFIXES and invert:
            return prepare_face(item.source, settings.invert, generator)
        latents = load_latents(settings.latent or item.source, generator.num_ws, generator.w_dim)
        if settings.latent is not None:  # the photo names the latent and finds its transform
            return [(item.name, None, next(iter(latents.values())), str(item.source))]
        if list(latents) == [latent_stem(item.source)]:
            return [(item.name, None, latents[latent_stem(item.source)], str(item.source))]
        return [(output_stem(key), key, latent, key) for key, latent in latents.items()]

    def process(chunk: list[tuple[Item, object]]) -> list[dict]:
        faces = [(item, face) for item, face in chunk if not isinstance(face, list)]
        inverted = dict(zip([item for item, _ in faces], invert_faces([face for _, face in faces], settings.invert,
                                                                      encoder, generator, lpips_model)
                            if faces else []))
        records = []
        for item, prepared in chunk:
            if item in inverted:
                latent = inverted[item].latents.to(torch.float32)
                saved = save_npy(latent.numpy(), Path(settings.outdir) / "inversion" / f"{item.name}_latent.npy")
                base = prepared.inverse_transform
                sources = [FovSource(item.name, latent, torch.from_numpy(base) if base is not None else None)]
                records.append(expander.expand(sources, [str(saved)]))
            else:
                records.append(expander.expand([expander.source(item, *entry) for entry in prepared]))
        return records

    report = batch.run_chunks(prepare, process, settings.invert.batch_size if invert else 1)
    summary = report.write("expand_fov.json", settings.record(), margins=vars(margins),
                           **expander.edit_records())
    return {**summary, "exit_code": report.exit_code}


class _Expander:
    """Edits (when asked) and expands the latents of one batch item; names must stay unique in the batch."""

    def __init__(self, generator, settings: ExpandFovSettings, margins: Margins, reporter: Reporter,
                 prompts=None):
        from ...editing.directions import generator_hint

        self.generator, self.settings, self.margins, self.reporter = generator, settings, margins, reporter
        hint = generator_hint(settings.network or settings.encoder, generator)
        wanted = settings.edits or settings.texts
        self.request = prepare_edits(generator, settings, hint, prompts) if wanted else None
        self.transforms = TransformTable.read(settings.transforms) if settings.transforms else None
        self.item_names: set[str] = set()
        self._entry_names: set[str] = set()

    def source(self, item: Item, name: str, key: str | None, latent: np.ndarray, lookup: str) -> FovSource:
        if key is not None:
            if name in self._entry_names or (name in self.item_names and name != item.name):
                raise SgtoolError(f"another input is also named {name!r}, so their outputs would overwrite each "
                                  "other; expand them into different --outdir folders")
            self._entry_names.add(name)
        table = self.transforms if self.transforms is not None else TransformTable.beside(item.source)
        matrix = None
        if table is not None:
            matrix = (table.require(lookup, "drop --transforms to expand the aligned view (or the view invert.json "
                                    "beside the latents records)", latent=True)
                      if self.transforms is not None else table.find(lookup, latent=True))
        base = torch.from_numpy(matrix.astype(np.float32)) if matrix is not None else None
        return FovSource(name, torch.from_numpy(latent), base, key)

    def expand(self, sources: list[FovSource], outputs: list[str] | None = None) -> dict:
        settings, entries, outputs = self.settings, [], list(outputs or [])
        for source in sources:
            if self.request is not None:
                ws = torch.as_tensor(source.code).to(next(self.generator.parameters()).device)
                source = FovSource(f"{source.name}_{self.request.label}", self.request.edit(self.generator, ws[None]),
                                   source.base_transform, source.key)
            record = write_expanded(self.generator, source, self.margins, settings.outdir, settings.overlap,
                                    settings.feather)
            outputs += [record["image"], record["tile_transforms"]]
            entries.append(record)
        return {"outputs": outputs, "entries": entries}

    def edit_records(self) -> dict:
        records = self.request.records() if self.request is not None else {"edits": [], "text_edits": []}
        return {"edits": records["edits"], "text_edits": records["text_edits"]}
