"""The edits of a clip, faded in over `edit_ramp` seconds: the one place a frame's latent is edited."""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

import numpy as np
import torch

from ...settings import EditOptions
from ..edit.texts import TextPrompts


def ramp_factors(frames: Sequence[int], seconds: float, fps: Fraction | float) -> np.ndarray:
    """Edit strength factor per frame: a smoothstep from 0 to 1 over `seconds` (1 everywhere for 0)."""
    t = np.asarray(frames, dtype=np.float64)
    if seconds <= 0:
        return np.ones(len(t))
    x = np.minimum(1.0, t / (seconds * float(fps)))
    return x * x * (3 - 2 * x)


class ClipEdits:
    """The resolved edits (directions loaded and checked against the generator before any work)."""

    def __init__(self, generator, options: EditOptions, ramp_seconds: float, fps: Fraction, hint: str,
                 prompts: TextPrompts | None = None):
        from ...editing.directions import generator_hint
        from ..edit.requests import prepare_edits

        wanted = options.edits or options.texts
        self.request = prepare_edits(generator, options, generator_hint(hint, generator), prompts) if wanted else None
        self.ramp_seconds = ramp_seconds
        self.fps = fps

    def __bool__(self) -> bool:
        return self.request is not None and bool(self.request.edits or self.request.texts is not None)

    def edit(self, generator, ws: torch.Tensor, frames: Sequence[int]):
        """The codes of W+ `ws` [N, num_ws, w_dim] of `frames`, edited at each frame's ramp strength: W+, or S
        with text edits (`render.render` draws either). `generator`: the one rendering (a tuned one too)."""
        if not self:
            return ws
        factors = torch.from_numpy(ramp_factors(frames, self.ramp_seconds, self.fps)).to(ws.dtype)
        return self.request.edit(generator, ws, factors)

    def records(self) -> dict:
        """The direction and text edits as a run's summary records them."""
        records = self.request.records() if self else {"edits": [], "text_edits": []}
        return {"edits": records["edits"], "text_edits": records["text_edits"]}
