"""`sgtool align`: FFHQ-aligned and unaligned face crops plus the landmarks transform between them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..errors import SgtoolError
from ..pipelines.align import RECIPES, align_paths, expand_inputs, save_landmarks_transforms
from ..utils.batch import parse_shard, select_shard, shard_file_name, write_manifest
from .common import ConfigOpt, JsonOpt, SetOpt, ShardOpt, console, emit_json, reports_errors, setup


@reports_errors
def align(
    paths: Annotated[list[str], typer.Argument(help="Image files, directories or globs (quote globs).")],
    outdir: Annotated[Optional[Path], typer.Option("--outdir", "-o", help="Output directory.")] = None,
    size: Annotated[Optional[int], typer.Option("--size", help="Side of both crops in pixels.")] = None,
    recipe: Annotated[Optional[str], typer.Option("--recipe", help="ffhq (NVIDIA's FFHQ script) or eyes.")] = None,
    max_faces: Annotated[Optional[int], typer.Option("--max-faces", help="Keep the N largest faces per image.")] = None,
    min_face_size: Annotated[Optional[float], typer.Option(
        "--min-face-size", help="Ignore faces whose detector box is smaller than PX pixels.")] = None,
    save_transforms: Annotated[Optional[Path], typer.Option(
        "--save-transforms", help="Also write stylegan3-editing's landmarks_transforms dict (.npy).")] = None,
    skip_existing: Annotated[Optional[bool], typer.Option(
        "--skip-existing/--no-skip-existing", help="Keep faces already in OUTDIR/alignment.json.")] = None,
    shard: ShardOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
):
    """Find every face; write NAME_faceK_aligned.png, NAME_faceK_crop.png and alignment.json.

    Exit code 1 when some input had no face or could not be read (the others are still written).
    """
    ctx = setup("align", config, set_, json_out)
    cfg = ctx.config
    ctx.override((("outdir", outdir), ("size", size), ("recipe", recipe), ("max_faces", max_faces),
                  ("min_face_size", min_face_size), ("save_transforms", save_transforms),
                  ("skip_existing", skip_existing)))
    if cfg["recipe"] not in RECIPES:
        raise SgtoolError(f"--recipe must be one of {', '.join(RECIPES)}, got {cfg['recipe']!r}")
    save_to = Path(cfg["save_transforms"]) if cfg["save_transforms"] else None
    if save_to is not None and save_to.suffix != ".npy":
        raise SgtoolError(f"--save-transforms needs a .npy file name, got {save_to}")
    shard_spec = parse_shard(shard)
    all_sources = expand_inputs(paths)
    sources = select_shard(all_sources, shard_spec)
    out = Path(cfg["outdir"])
    summary_name = shard_file_name("alignment.json", shard_spec)
    if save_to is not None:
        save_to = save_to.with_name(shard_file_name(save_to.name, shard_spec))

    with Progress(TextColumn("aligning"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[name]}"),
                  TimeRemainingColumn(), console=console, transient=True, disable=ctx.json) as progress:
        task = progress.add_task("align", total=len(sources), name="")

        def report(src, records, error):
            if error is not None:
                progress.console.print(f"[yellow]{error}[/]", highlight=False, soft_wrap=True)
            progress.update(task, advance=1, name=src.name)

        summary = align_paths(sources, out, size=int(cfg["size"]), recipe=cfg["recipe"],
                              max_faces=cfg["max_faces"], min_face_size=float(cfg["min_face_size"]),
                              supersample=int(cfg["supersample"]), padding=bool(cfg["padding"]),
                              skip_existing=bool(cfg["skip_existing"]), on_source=report,
                              summary_name=summary_name) if sources else {"faces": [], "failures": []}
    if save_to is not None:
        summary["transforms"] = str(save_landmarks_transforms(summary["faces"], save_to))
    if shard_spec is not None:
        summary["manifest"] = str(write_manifest(out, "align", shard_spec, _manifest_items(sources, summary),
                                                 inputs_total=len(all_sources),
                                                 summary_file="alignment.json" if sources else None))
    if ctx.json:
        emit_json(summary)
    else:
        failed = len(summary["failures"])
        console.print(f"aligned {len(summary['faces'])} face(s) from {len(sources) - failed} of {len(sources)} "
                      f"image(s){f' (shard {shard_spec})' if shard_spec else ''} into {out}/ "
                      f"(records in {out / summary_name})"
                      + (f"; landmarks transforms in {save_to}" if save_to is not None else ""))
    if summary["failures"]:
        raise typer.Exit(1)


def _manifest_items(sources, summary: dict) -> list[dict]:
    failures = {f["source"]: f["error"] for f in summary["failures"]}
    outputs: dict[str, list[str]] = {}
    for face in summary["faces"]:
        outputs.setdefault(face["source"], []).extend([face["aligned"], face["crop"]])
    return [{"input": str(src), "status": "failed", "error": failures[str(src)]} if str(src) in failures
            else {"input": str(src), "status": "ok", "outputs": outputs.get(str(src), [])} for src in sources]
