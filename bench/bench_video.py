"""`sgtool video` throughput per stage on a 10 s 512x512 clip with the golden ReStyle encoder and its decoder.

The clip is skimage's astronaut moved by a smooth motion plus jitter, with a tone as audio (the clip the
tests use, at bench size). On a GPU every frame is processed; on a CPU the golden decoder (512 px) takes
seconds per frame, so only the first BENCH_VIDEO_FRAMES frames (default 8) of the clip go through the
pipeline. The reference rows are ffmpeg alone on the same frames (decode, then H.264 encode): `x ref` is a
stage's time per frame over that of decode + encode, measured in the same run.

    python bench/bench_video.py            # or: make bench (runs every bench)
    BENCH_VIDEO_FRAMES=250 python bench/bench_video.py   # the whole clip on a CPU
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.clips import make_clip  # noqa: E402

from sgtool.device import resolve_device  # noqa: E402
from sgtool.pipelines.video import run_video  # noqa: E402
from sgtool.pipelines.shared.video_io import VideoWriter, decode_frames  # noqa: E402
from sgtool.settings import VideoSettings  # noqa: E402

GOLDEN = (ROOT / ".." / "shared" / "golden" / "encoders").resolve()
SECONDS, FPS, SIZE = 10, Fraction(25), 512


def main():
    encoder = GOLDEN / "BackboneEncoder_ckpt.pt"
    if not encoder.is_file():
        print(f"skipped: golden encoder not found at {encoder}")
        return
    device = resolve_device("auto")
    frames = int(os.environ.get("BENCH_VIDEO_FRAMES", SECONDS * FPS if device.type == "cuda" else 8))
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = make_clip(tmp, frames=SECONDS * int(FPS), size=SIZE, fps=FPS, scale=1.6, jitter_px=4.0)
        np.save(tmp / "age.npy", np.random.default_rng(0).standard_normal((1, 512)).astype(np.float32))

        start = time.perf_counter()
        decoded = list(decode_frames(clip.path, max_frames=frames))
        decode = time.perf_counter() - start
        start = time.perf_counter()
        with VideoWriter(tmp / "ref.mp4", SIZE, SIZE, FPS) as writer:
            for frame in decoded:
                writer.write(frame)
        encode = time.perf_counter() - start
        del decoded
        reference = (decode + encode) / frames

        settings = VideoSettings(encoder=str(encoder), outdir=tmp / "run", max_frames=frames, size=256, batch_size=4,
                                 device=str(device), edits=["age=+2"], directions=[f"age={tmp / 'age.npy'}"])
        summary = run_video(clip.path, settings)

    print(f"{frames} of {SECONDS * int(FPS)} frames ({SIZE}x{SIZE}, {float(FPS):g} fps) on {device}; "
          f"golden BackboneEncoder + its 512 px decoder, crops 256 px")
    print(f"{'stage':<22}{'seconds':>10}{'frames/s':>11}{'x ref':>9}")
    print(f"{'ref: ffmpeg decode':<22}{decode:>10.2f}{frames / decode:>11.2f}{decode / frames / reference:>9.2f}")
    print(f"{'ref: ffmpeg encode':<22}{encode:>10.2f}{frames / encode:>11.2f}{encode / frames / reference:>9.2f}")
    for name, stage in summary["stages"].items():
        seconds = stage["seconds"]
        rate = frames / seconds if seconds > 0 else float("inf")
        print(f"{name:<22}{seconds:>10.2f}{rate:>11.2f}{seconds / frames / reference:>9.1f}")
    total = summary["seconds"]
    print(f"{'total':<22}{total:>10.2f}{frames / total:>11.2f}{total / frames / reference:>9.1f}")
    print(f"quad jitter raw {summary['quad_jitter']['raw']:.3f} -> smoothed {summary['quad_jitter']['smoothed']:.3f}"
          f" px/frame^2; audio {summary['audio']}")


if __name__ == "__main__":
    main()
