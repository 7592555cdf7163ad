"""Expanding the field of view with StyleGAN3's translatable Fourier-feature input.

The generator is rendered several times with its input transform shifted by whole output
pixels; each render is a window of one larger, consistent picture (StyleGAN3 is translation
equivariant). The windows are placed on a canvas and blended with smooth weights; the centre
window is the plain render and is kept exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ...errors import SgtoolError
from ..shared.render import render

MAX_CANVAS_FACTOR = 2  # beyond 2x the resolution per direction the generator's content falls apart


@dataclass(frozen=True)
class Margins:
    left: int = 0
    right: int = 0
    top: int = 0
    bottom: int = 0

    def check(self, resolution: int) -> None:
        values = (self.left, self.right, self.top, self.bottom)
        if any(v < 0 for v in values):
            raise SgtoolError(f"margins must be >= 0 pixels, got left/right/top/bottom {values}")
        for axis, total in (("width", self.left + self.right), ("height", self.top + self.bottom)):
            if resolution + total > MAX_CANVAS_FACTOR * resolution:
                raise SgtoolError(
                    f"the expanded {axis} would be {resolution + total} px, more than {MAX_CANVAS_FACTOR}x the "
                    f"generator's {resolution} px, where StyleGAN3's extrapolation falls apart; use smaller margins")


@dataclass
class Tile:
    offset: tuple[int, int]  # (dx, dy): this render shows the base picture shifted by offset pixels
    transform: torch.Tensor  # [3, 3] input transform for this render


def require_stylegan3(generator) -> None:
    if generator.kind != "stylegan3":
        raise SgtoolError("expand-fov needs a StyleGAN3 generator: StyleGAN2 has no input transform to translate")


def translation_matrix(dx_pixels: float, dy_pixels: float, resolution: int) -> torch.Tensor:
    """Shift of the output sampling grid by whole pixels, in the generator's normalised units
    (the image spans [-0.5, 0.5], so one pixel is 1/resolution)."""
    shift = torch.eye(3, dtype=torch.float64)
    shift[0, 2] = dx_pixels / resolution
    shift[1, 2] = dy_pixels / resolution
    return shift


def _axis_offsets(before: int, after: int, step: int) -> list[int]:
    """Window offsets along one axis covering [-before, resolution + after) with overlapping windows."""
    offsets = {0}
    for sign, margin in ((-1, before), (1, after)):
        for k in range(1, math.ceil(margin / step) + 1):
            offsets.add(sign * min(k * step, margin))
    return sorted(offsets)


def plan_tiles(resolution: int, margins: Margins, base_transform: torch.Tensor | None = None,
               overlap: float = 0.5) -> list[Tile]:
    """The renders needed: a grid of windows, the centre one first.

    A window shifted by (dx, dy) pixels renders `base(p + offset)` at pixel p, so its input
    transform is base_transform @ translation(dx, dy): the shift happens in output coordinates,
    before any landmarks transform that places an unaligned crop.
    """
    margins.check(resolution)
    step = max(1, int(round(resolution * (1 - overlap))))
    base = torch.eye(3, dtype=torch.float64) if base_transform is None else base_transform.to(torch.float64)
    xs = _axis_offsets(margins.left, margins.right, step)
    ys = _axis_offsets(margins.top, margins.bottom, step)
    offsets = sorted(((dx, dy) for dy in ys for dx in xs), key=lambda o: (o != (0, 0), abs(o[0]) + abs(o[1]), o))
    return [Tile(offset=o, transform=(base @ translation_matrix(o[0], o[1], resolution)).to(torch.float32))
            for o in offsets]


def _ramp(length: int, feather: int, taper_start: bool, taper_end: bool) -> np.ndarray:
    """1-D blend weight: 1 inside, raised-cosine to ~0 over `feather` pixels at tapered ends."""
    w = np.ones(length)
    if feather > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(feather) + 0.5) / feather)
        if taper_start:
            w[:feather] = ramp
        if taper_end:
            w[length - feather:] = ramp[::-1]
    return w


def blend_tiles(renders: list[np.ndarray], tiles: list[Tile], resolution: int, margins: Margins,
                feather: int | None = None) -> np.ndarray:
    """Place float HWC renders on the canvas; weights taper only at window edges inside the canvas.

    The centre window (offset 0, 0) is pasted last without blending, so the original frame is
    reproduced exactly and only the new margins come from the other windows.
    """
    width = resolution + margins.left + margins.right
    height = resolution + margins.top + margins.bottom
    feather = resolution // 4 if feather is None else feather
    channels = renders[0].shape[2]
    acc = np.zeros((height, width, channels))
    total = np.zeros((height, width, 1))
    for window, tile in zip(renders, tiles):
        x0, y0 = margins.left + tile.offset[0], margins.top + tile.offset[1]
        wx = _ramp(resolution, feather, x0 > 0, x0 + resolution < width)
        wy = _ramp(resolution, feather, y0 > 0, y0 + resolution < height)
        weight = (wy[:, None] * wx[None, :])[:, :, None]
        acc[y0:y0 + resolution, x0:x0 + resolution] += weight * window
        total[y0:y0 + resolution, x0:x0 + resolution] += weight
    canvas = acc / np.maximum(total, 1e-12)
    centre = renders[[t.offset for t in tiles].index((0, 0))]
    canvas[margins.top:margins.top + resolution, margins.left:margins.left + resolution] = centre
    return canvas


@torch.no_grad()
def expand_fov(generator, code, margins: Margins, base_transform: torch.Tensor | None = None,
               overlap: float = 0.5, feather: int | None = None, on_tile=None):
    """Render one code on an expanded canvas: a W+ latent [num_ws, w_dim] (or [1, ...]) or S (a batch of one,
    for text and style-channel edits).

    Returns (canvas [3, H, W] float tensor in the generator's range, tiles). `base_transform` is
    the input transform of the unexpanded render (identity, or inv(T) for an unaligned crop).
    """
    require_stylegan3(generator)
    resolution = generator.img_resolution
    tiles = plan_tiles(resolution, margins, base_transform, overlap)
    renders = []
    for tile in tiles:
        image = render(generator, code, tile.transform)
        renders.append(image[0].permute(1, 2, 0).cpu().numpy().astype(np.float64))
        if on_tile is not None:
            on_tile(tile)
    canvas = blend_tiles(renders, tiles, resolution, margins, feather)
    return torch.from_numpy(canvas).permute(2, 0, 1).to(torch.float32), tiles
