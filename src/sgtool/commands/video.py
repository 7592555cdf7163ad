"""`sgtool video`: invert, tune, edit and re-assemble a real video, keeping its audio."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..device import resolve_device
from ..errors import SgtoolError
from ..pipelines.paste import MaskSettings
from ..pipelines.smoothing import Smoothing
from ..pipelines.video import OUTPUTS, Reporter, VideoSettings, run_video
from ..utils.parsing import parse_int_list
from .common import ConfigOpt, DeviceOpt, JsonOpt, KernelsOpt, SetOpt, console, emit_json, reports_errors, setup


class RichReporter(Reporter):
    """One progress bar per stage on stderr."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.task = None

    def start(self, stage: str, total: int | None) -> None:
        self.task = self.progress.add_task(stage, total=total)

    def advance(self, count: int = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, count)

    def finish(self) -> None:
        if self.task is not None:
            self.progress.update(self.task, total=self.progress.tasks[-1].completed)
        self.task = None

    def note(self, text: str) -> None:
        self.progress.console.print(text)


def _layers(value, what: str):
    if value is None or isinstance(value, list):
        return value
    return parse_int_list(str(value), what)


def settings_from_config(cfg: dict) -> VideoSettings:
    outputs = cfg["outputs"]
    if isinstance(outputs, str):
        outputs = [o.strip() for o in outputs.split(",") if o.strip()]
    try:
        return VideoSettings(
            start=float(cfg["start"] or 0), end=None if cfg["end"] is None else float(cfg["end"]),
            max_frames=cfg["max_frames"], fps=cfg["fps"], face_index=int(cfg["face_index"]),
            min_face_size=float(cfg["min_face_size"]), recipe=cfg["recipe"], size=cfg["size"],
            supersample=int(cfg["supersample"]),
            landmark_smoothing=Smoothing.from_config(cfg["landmark_smoothing"]),
            latent_smoothing=Smoothing.from_config(cfg["latent_smoothing"]),
            freeze_fine=bool(cfg["freeze_fine"]), fine_layers=_layers(cfg["fine_layers"], "fine layer"),
            invert_steps=cfg["invert_steps"], batch_size=int(cfg["batch_size"]), tune_frames=int(cfg["tune_frames"]),
            tune=dict(cfg["tune"] or {}), edits=list(cfg["edits"] or []), directions=list(cfg["directions"] or []),
            edit_layers=_layers(cfg["edit_layers"], "edit layer"), edit_ramp=float(cfg["edit_ramp"]),
            stitch_steps=int(cfg["stitch_steps"]), stitch_lr=float(cfg["stitch_lr"]),
            mask=MaskSettings.from_config(cfg["mask"]), outputs=list(outputs), crf=int(cfg["crf"]),
            preset=str(cfg["preset"]), force=bool(cfg["force"]), device=str(resolve_device(cfg["device"])))
    except (TypeError, ValueError) as exc:
        raise SgtoolError(f"invalid video setting: {exc}") from None


@reports_errors
def video(
    clip: Annotated[Path, typer.Argument(help="Input video (anything ffmpeg reads).")],
    encoder: Annotated[Optional[Path], typer.Option("--encoder", "-e", help="ReStyle encoder checkpoint (.pt).")] = None,
    network: Annotated[Optional[str], typer.Option("--network", "-n", help="Generator (default: the encoder's decoder).")] = None,
    outdir: Annotated[Optional[Path], typer.Option("--outdir", "-o", help="Output (and cache) directory.")] = None,
    edit: Annotated[Optional[list[str]], typer.Option("--edit", help="NAME=STRENGTH, e.g. age=+2 (repeatable).")] = None,
    direction: Annotated[Optional[list[str]], typer.Option("--direction", help="NAME=FILE direction (repeatable).")] = None,
    edit_ramp: Annotated[Optional[float], typer.Option("--edit-ramp", help="Fade the edit in over S seconds.")] = None,
    edit_layers: Annotated[Optional[str], typer.Option("--edit-layers", help="Style inputs edited, e.g. 0-5.")] = None,
    start: Annotated[Optional[float], typer.Option("--start", help="Start time (s).")] = None,
    end: Annotated[Optional[float], typer.Option("--end", help="End time (s).")] = None,
    max_frames: Annotated[Optional[int], typer.Option("--max-frames", help="Process at most N frames.")] = None,
    fps: Annotated[Optional[float], typer.Option("--fps", help="Resample the clip to this frame rate.")] = None,
    face_index: Annotated[Optional[int], typer.Option("--face-index", help="Which face (0 = largest).")] = None,
    size: Annotated[Optional[int], typer.Option("--size", help="Crop side (default: generator resolution).")] = None,
    smooth_window: Annotated[Optional[int], typer.Option("--smooth-window", help="Quad smoothing window (frames, odd).")] = None,
    smooth_method: Annotated[Optional[str], typer.Option("--smooth-method", help="gaussian, one_euro or none.")] = None,
    latent_window: Annotated[Optional[int], typer.Option("--latent-window", help="Latent smoothing window (frames, odd).")] = None,
    freeze_fine: Annotated[Optional[bool], typer.Option("--freeze-fine/--no-freeze-fine", help="Fine layers = clip mean.")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="ReStyle iterations per frame.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Frames per batch.")] = None,
    tune: Annotated[Optional[int], typer.Option("--tune", help="Joint PTI over N sampled frames.")] = None,
    tune_steps: Annotated[Optional[int], typer.Option("--tune-steps", help="PTI steps.")] = None,
    stitch_tune: Annotated[Optional[int], typer.Option("--stitch-tune", help="Per-frame stitching steps.")] = None,
    selfie_mask: Annotated[Optional[bool], typer.Option("--selfie-mask/--no-selfie-mask", help="Widen the mask with selfie segmentation.")] = None,
    outputs: Annotated[Optional[str], typer.Option("--outputs", help=f"Comma list of {','.join(OUTPUTS)}.")] = None,
    force: Annotated[Optional[bool], typer.Option("--force", help="Recompute every cached stage.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    kernels: KernelsOpt = None,
    json_out: JsonOpt = False,
):
    """Invert, tune, edit and paste a face back into a video without jitter; the audio is kept."""
    ctx = setup("video", config, set_, json_out, device, kernels)
    cfg = ctx.config
    ctx.override((("encoder", encoder), ("network", network), ("outdir", outdir), ("edits", edit),
                  ("directions", direction), ("edit_ramp", edit_ramp), ("edit_layers", edit_layers),
                  ("start", start), ("end", end), ("max_frames", max_frames), ("fps", fps),
                  ("face_index", face_index), ("size", size), ("freeze_fine", freeze_fine),
                  ("invert_steps", steps), ("batch_size", batch_size), ("tune_frames", tune),
                  ("stitch_steps", stitch_tune), ("outputs", outputs), ("force", force)))
    if smooth_window is not None:
        cfg["landmark_smoothing"]["window"] = smooth_window
    if smooth_method is not None:
        cfg["landmark_smoothing"]["method"] = smooth_method
    if latent_window is not None:
        cfg["latent_smoothing"]["window"] = latent_window
    if tune_steps is not None:
        cfg["tune"]["steps"] = tune_steps
    if selfie_mask is not None:
        cfg["mask"]["selfie"] = selfie_mask
    if not cfg.get("encoder"):
        raise SgtoolError("--encoder is required: pass a ReStyle encoder checkpoint such as restyle_pSp_ffhq.pt")
    settings = settings_from_config(cfg)
    out = Path(cfg["outdir"])
    columns = (TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, disable=ctx.json) as progress:
        summary = run_video(clip, out, cfg["encoder"], settings, network=cfg["network"],
                            reporter=RichReporter(progress))
    if ctx.json:
        emit_json(summary)
        return
    missing = summary["frames_without_face"]
    if missing:
        console.print(f"[yellow]no face found in {len(missing)} frame(s) ({_ranges(missing)}): filled from "
                      "neighbouring frames[/]")
    for name, stage in summary["stages"].items():
        rate = f", {stage['frames_per_second']:.2f} frames/s" if stage.get("frames_per_second") else ""
        took = "cached" if stage["cached"] else f"{stage['seconds']:.1f}s"
        console.print(f"  {name:<13} {took}{rate}")
    jit = summary["quad_jitter"]
    console.print(f"{summary['frames']} frames at {summary['fps']:.3f} fps; quad jitter {jit['raw']:.3f} -> "
                  f"{jit['smoothed']:.3f} px/frame^2; audio: {summary['audio'] or 'none in the source'}")
    console.print(f"wrote {', '.join(Path(p).name for p in summary['outputs'].values())} to {out}/ "
                  f"(summary in {out / 'video.json'})")


def _ranges(frames: list[int]) -> str:
    parts, start = [], None
    for i, f in enumerate(frames):
        if start is None:
            start = f
        if i + 1 == len(frames) or frames[i + 1] != f + 1:
            parts.append(f"{start}" if start == f else f"{start}-{f}")
            start = None
    return ", ".join(parts)
