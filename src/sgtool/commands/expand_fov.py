"""`sgtool expand-fov`: render beyond the original frame with StyleGAN3's input translation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.progress import Progress

from ..config import load_config
from ..device import resolve_device
from ..errors import SgtoolError
from ..latents import load_latents
from ..models import load_generator
from ..pipelines.expand_fov import VIDEO_SUFFIXES, FovSource, Margins, expand_video, plan_tiles, write_expanded
from ..utils.io import write_json
from ..utils.batch import parse_shard, select_shard, shard_file_name, write_manifest
from .common import (ConfigOpt, DeviceOpt, JsonOpt, KernelsOpt, SetOpt, ShardOpt, console, emit_json, reports_errors,
                     setup)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
ListOpt = Optional[list[str]]


@reports_errors
def expand_fov(
    inputs: Annotated[list[Path], typer.Argument(help="NAME_latent.npy / latents.npy dicts, or photos to invert first.")],
    network: Annotated[Optional[str], typer.Option("--network", "-n", help="StyleGAN3 generator.")] = None,
    left: Annotated[Optional[int], typer.Option("--left", help="Pixels to add on the left.")] = None,
    right: Annotated[Optional[int], typer.Option("--right", help="Pixels to add on the right.")] = None,
    top: Annotated[Optional[int], typer.Option("--top", help="Pixels to add at the top.")] = None,
    bottom: Annotated[Optional[int], typer.Option("--bottom", help="Pixels to add at the bottom.")] = None,
    all_sides: Annotated[Optional[int], typer.Option("--all", help="Pixels to add on every side.")] = None,
    latent: Annotated[Optional[Path], typer.Option("--latent", help="Latent of a photo input (skip inversion).")] = None,
    edits: Annotated[ListOpt, typer.Option("--edit", "-e", help="NAME=STRENGTH before expanding (repeatable).")] = None,
    directions: Annotated[ListOpt, typer.Option("--direction", help="Add a direction: NAME=FILE.npy.")] = None,
    transforms: Annotated[Optional[Path], typer.Option("--transforms", help="Landmarks transforms (alignment.json or "
                                                       ".npy dict): expand the unaligned crop.")] = None,
    encoder: Annotated[Optional[str], typer.Option("--encoder", help="Encoder for photo inputs.")] = None,
    method: Annotated[Optional[str], typer.Option("--method", help="Inversion method for photos.")] = None,
    outdir: Annotated[Optional[Path], typer.Option("--outdir", "-o", help="Output directory.")] = None,
    shard: ShardOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    kernels: KernelsOpt = None,
    json_out: JsonOpt = False,
):
    """Render a StyleGAN3 latent (or an inverted photo) on a wider canvas, with optional edits."""
    ctx = setup("expand-fov", config, set_, json_out, device, kernels)
    cfg = ctx.config
    ctx.override((("network", network), ("left", left), ("right", right), ("top", top), ("bottom", bottom),
                  ("transforms", transforms), ("outdir", outdir), ("encoder", encoder), ("method", method)))
    if all_sides is not None:
        cfg.update(left=all_sides, right=all_sides, top=all_sides, bottom=all_sides)
    margins = Margins(int(cfg["left"]), int(cfg["right"]), int(cfg["top"]), int(cfg["bottom"]))
    if (margins.left, margins.right, margins.top, margins.bottom) == (0, 0, 0, 0):
        raise SgtoolError("nothing to expand: give --left/--right/--top/--bottom or --all in pixels")
    torch_device = resolve_device(cfg["device"])
    out = Path(cfg["outdir"])

    shard_spec = parse_shard(shard)
    if any(p.suffix.lower() in VIDEO_SUFFIXES for p in inputs):
        if shard_spec is not None:
            raise SgtoolError("--shard splits batches of photos or latents; a video is expanded as one job")
        _expand_clip(inputs, cfg, margins, edits or [], directions or [], out, torch_device, ctx.json)
        return
    all_inputs, inputs = inputs, select_shard(inputs, shard_spec)
    photos = [p for p in inputs if p.suffix.lower() in IMAGE_SUFFIXES]
    if photos and latent is None:
        sources, generator = _invert_photos(photos, cfg, out, torch_device, ctx.json)
    else:
        if not cfg.get("network"):
            raise SgtoolError("--network is required: the StyleGAN3 generator the latents belong to")
        generator = load_generator(cfg["network"], device=torch_device)
        _require_stylegan3(generator)
        latent_files = [latent] if latent is not None else inputs
        sources = _latent_sources(latent_files, photos, generator, cfg.get("transforms"))
    _require_stylegan3(generator)
    margins.check(generator.img_resolution)
    if edits:
        sources = _apply_edits(sources, generator, edits, directions or [], cfg)

    records, failed = [], []
    tiles_each = len(plan_tiles(generator.img_resolution, margins))
    with Progress(console=console, transient=True, disable=ctx.json) as progress:
        task = progress.add_task("rendering tiles", total=tiles_each * len(sources))
        for source in sources:
            try:
                records.append(write_expanded(generator, source, margins, out, float(cfg["overlap"]),
                                              cfg.get("feather"), on_tile=lambda _: progress.advance(task)))
            except SgtoolError as exc:
                failed.append({"name": source.name, "input": source.origin, "error": str(exc)})
    summary = {"config": {**cfg, "edits": list(edits or []), "directions": list(directions or [])},
               "images": records, "failed": failed}
    write_json(summary, out / shard_file_name("expand_fov.json", shard_spec))
    if shard_spec is not None:
        bad = {item["input"]: item["error"] for item in failed}
        items = [{"input": str(p), "status": "failed", "error": bad[str(p)]} if str(p) in bad
                 else {"input": str(p), "status": "ok"} for p in inputs]
        summary["manifest"] = str(write_manifest(out, "expand-fov", shard_spec, items, inputs_total=len(all_inputs),
                                                 summary_file="expand_fov.json"))
    if ctx.json:
        emit_json(summary)
    else:
        for record in records:
            console.print(f"{record['name']}: {record['image']} ({record['size'][0]}x{record['size'][1]})")
        for item in failed:
            console.print(f"[red]failed[/] {item['name']}: {item['error']}")
    if failed:
        raise typer.Exit(1)


def _expand_clip(inputs, cfg, margins, edits, directions, out: Path, device, quiet: bool) -> None:
    """Video mode: reuse (or first compute) the video pipeline's stages in --outdir, then expand each frame."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from .video import RichReporter, settings_from_config

    if len(inputs) != 1:
        raise SgtoolError("give one video at a time to expand-fov")
    if not cfg.get("encoder"):
        raise SgtoolError("--encoder is required for a video: its frames are inverted (and cached) first")
    video_cfg = load_config("video")
    video_cfg.update(edits=list(edits), directions=list(directions), device=str(device), outputs=["output"])
    settings = settings_from_config(video_cfg)
    columns = (TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=quiet) as progress:
        record = expand_video(inputs[0], out, cfg["encoder"], settings, margins, network=cfg.get("network"),
                              reporter=RichReporter(progress), overlap=float(cfg["overlap"]),
                              feather=cfg.get("feather"))
    if quiet:
        emit_json(record)
    else:
        console.print(f"wrote {record['video']} ({record['frames']} frames, {record['size'][0]}x{record['size'][1]})")


def _require_stylegan3(generator) -> None:
    if generator.kind != "stylegan3":
        raise SgtoolError("expand-fov needs a StyleGAN3 generator: StyleGAN2 has no input transform to translate")


def _latent_sources(files, photos, generator, transforms_file) -> list[FovSource]:
    from ..pipelines.edit import load_transforms, match_transform

    transforms = load_transforms(transforms_file) if transforms_file else {}
    sources = []
    for path in files:
        for name, ws in load_latents(path, generator.num_ws, generator.w_dim).items():
            name = photos[0].stem if photos and len(files) == 1 else name
            matrix = match_transform(name, transforms) if transforms else None
            base = torch.from_numpy(matrix).to(torch.float32) if matrix is not None else None
            sources.append(FovSource(name=name, ws=torch.from_numpy(ws), base_transform=base, origin=str(path)))
    return sources


def _invert_photos(photos, cfg, out: Path, device, quiet: bool):
    """Invert photos with the invert pipeline first; the unaligned render is expanded when align found one."""
    from ..pipelines.invert import InvertSettings, invert_images, load_encoder

    invert_cfg = load_config("invert")
    method = cfg.get("method") or invert_cfg.get("method", "encoder")
    encoder_path = cfg.get("encoder")
    encoder = load_encoder(encoder_path, device=device, network=cfg.get("network")) if encoder_path else None
    generator = load_generator(cfg["network"], device=device) if encoder is None and cfg.get("network") else None
    if encoder is None and generator is None:
        raise SgtoolError("a photo must be inverted first: pass --encoder FILE.pt (or --network with --method optimize)")
    settings = InvertSettings(method=method, num_steps=int(invert_cfg.get("num_steps", 500)))
    if not quiet:
        console.print(f"inverting {len(photos)} photo(s) with --method {method} ...")
    report = invert_images(photos, out / "inversion", settings, encoder=encoder, generator=generator, device=device)
    if report.failed:
        raise SgtoolError(f"could not invert {report.failed[0]['source']}: {report.failed[0]['error']}")
    generator = generator if generator is not None else encoder.generator
    sources = []
    for record in report.records:
        ws = torch.from_numpy(load_latents(record["latent"], generator.num_ws, generator.w_dim).popitem()[1])
        base = record.get("inverse_transform")
        sources.append(FovSource(record["name"], ws, torch.tensor(base, dtype=torch.float32) if base else None,
                                 origin=record["source"]))
    return sources, generator


def _apply_edits(sources, generator, edits, directions, cfg) -> list[FovSource]:
    from ..editing.directions import DirectionRegistry, apply_edits, edit_label, generator_hint
    from ..pipelines.edit import prepare_request

    registry = DirectionRegistry.from_config(load_config("edit"))
    request = prepare_request(generator, registry, edits=edits, directions=directions,
                              hint=generator_hint(cfg.get("network"), generator))
    label = edit_label(request.edits)
    return [FovSource(f"{s.name}_{label}", apply_edits(s.ws[None], request.edits, request.layers, request.mode)[0],
                      s.base_transform, s.origin) for s in sources]
