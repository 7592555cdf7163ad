"""The edits of a clip, faded in over `edit_ramp` seconds: the one place a frame's latent is edited."""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

import numpy as np
import torch

from ...settings import EditOptions


def ramp_factors(frames: Sequence[int], seconds: float, fps: Fraction | float) -> np.ndarray:
    """Edit strength factor per frame: a smoothstep from 0 to 1 over `seconds` (1 everywhere for 0)."""
    t = np.asarray(frames, dtype=np.float64)
    if seconds <= 0:
        return np.ones(len(t))
    x = np.minimum(1.0, t / (seconds * float(fps)))
    return x * x * (3 - 2 * x)


class ClipEdits:
    """The resolved edits (directions loaded and checked against the generator before any work)."""

    def __init__(self, generator, options: EditOptions, ramp_seconds: float, fps: Fraction, hint: str):
        from ...editing.directions import generator_hint
        from ..edit import prepare_edits

        self.request = prepare_edits(generator, options, generator_hint(hint, generator)) if options.edits else None
        self.ramp_seconds = ramp_seconds
        self.fps = fps

    def __bool__(self) -> bool:
        return self.request is not None and bool(self.request.edits)

    def apply(self, ws: torch.Tensor, frames: Sequence[int]) -> torch.Tensor:
        """W+ codes [N, num_ws, w_dim] of `frames`, edited at each frame's ramp strength."""
        if not self:
            return ws
        factors = torch.from_numpy(ramp_factors(frames, self.ramp_seconds, self.fps)).to(ws.dtype).to(ws.device)
        return ws + factors.view(-1, 1, 1) * (self.request.apply(ws) - ws)

    def records(self) -> list[dict]:
        return self.request.records()["edits"] if self else []
