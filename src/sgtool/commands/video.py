"""`sgtool video`: invert, tune, edit and re-assemble a real video, keeping its audio."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..settings import VideoSettings
from .common import reporting, resolve_checkpoints
from .options import Run, command


@command(VideoSettings, "video", after_load=resolve_checkpoints)
def video(settings: VideoSettings, run: Run,
          clip: Annotated[Path, typer.Argument(help="Input video (anything ffmpeg reads).")]):
    """Invert, tune, edit and paste a face back into a video without jitter; the audio is kept."""
    from ..pipelines.video import run_video

    with reporting(run.json) as reporter:
        summary = run_video(clip, settings, reporter=reporter)
    missing = summary["frames_without_face"]
    if missing:
        run.say(f"no face found in {len(missing)} frame(s) ({frame_ranges(missing)}): filled from neighbouring "
                "frames")
    for name, stage in summary["stages"].items():
        rate = f", {stage['frames_per_second']:.2f} frames/s" if stage.get("frames_per_second") else ""
        took = "cached" if stage["cached"] else f"{stage['seconds']:.1f}s"
        run.say(f"  {name:<13} {took}{rate}")
    out = Path(settings.outdir)
    jit = summary["quad_jitter"]
    run.report(summary, f"{summary['frames']} frames at {summary['fps']:.3f} fps; quad jitter {jit['raw']:.3f} -> "
                        f"{jit['smoothed']:.3f} px/frame^2; audio: {summary['audio'] or 'none in the source'}; wrote "
                        f"{', '.join(Path(p).name for p in summary['outputs'].values())} to {out}/ (summary in "
                        f"{out / 'video.json'})")


def frame_ranges(frames: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    parts, start = [], None
    for i, f in enumerate(frames):
        if start is None:
            start = f
        if i + 1 == len(frames) or frames[i + 1] != f + 1:
            parts.append(f"{start}" if start == f else f"{start}-{f}")
            start = None
    return ", ".join(parts)
