"""Strength sweeps: one image per strength, a labelled grid of every latent's row, an mp4 per latent."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ...editing.directions import format_strength
from ...editing.stylespace import w_to_s
from ...utils.io import save_image, to_uint8
from .requests import EditRequest
from ..shared.images import labelled_grid
from ..shared.render import cat_codes, render
from ..shared.video_io import VideoWriter


def sweep_row(generator, ws: torch.Tensor, request: EditRequest, transform=None,
              batch_size: int = 8) -> list[np.ndarray]:
    """uint8 HWC images, one per sweep strength, each with the request's edits plus the swept one."""
    strengths = [float(s) for s in request.sweep_strengths]
    per_pass = max(1, batch_size // ws.shape[0])
    row: list[np.ndarray] = []
    for start in range(0, len(strengths), per_pass):
        codes = [request.swept(s).edit(generator, ws) for s in strengths[start:start + per_pass]]
        if any(isinstance(code, dict) for code in codes):  # a zero strength leaves W+: render all of them in S
            codes = [code if isinstance(code, dict) else w_to_s(generator, code) for code in codes]
        codes = cat_codes(codes)
        row.extend(to_uint8(render(generator, codes, transform, request.noise_mode)))
    return row


def sweep_tag(request: EditRequest) -> str:
    """'sweep_age' (or 'sweep_3c12' for a style channel), then the fixed edits: the sweep's file names."""
    base = f"sweep_{request.sweep_name.replace(':', 'c')}"
    return f"{base}_{request.sweep_label}" if request.sweep_label else base


def write_sweep_grid(rows: Sequence[Sequence[np.ndarray]], request: EditRequest, outdir) -> Path:
    """The rows (one per latent) under a header naming each column's strength: OUTDIR/sweep_....png."""
    labels = [f"{request.sweep_name}={format_strength(s)}" for s in request.sweep_strengths]
    return save_image(labelled_grid(rows, labels), Path(outdir) / f"{sweep_tag(request)}.png")


def write_animation(frames: Sequence[np.ndarray], path, fps: float = 8.0) -> Path:
    """uint8 HWC frames -> H.264 mp4, which appears under its name only once complete."""
    height, width = frames[0].shape[:2]
    with VideoWriter(path, width, height, Fraction(fps).limit_denominator(1001)) as writer:
        for frame in frames:
            writer.write(frame)
    return Path(path)
