""""Stitch it in Time": tune a copy of the generator for one frame so that its render matches the original
crop outside the head mask and the plain edit inside it, hiding the seam where the crop is pasted back."""

from __future__ import annotations

import copy

import cv2
import numpy as np
import torch

from ...settings import Mask
from ...utils.io import to_uint8
from ..shared.images import generator_target
from ..edit.paste import crop_to_source_matrix, head_mask
from ..shared.render import synthesize


def head_mask_in_render(landmarks: np.ndarray, crop_quad: np.ndarray, resolution: int, mask: Mask) -> np.ndarray:
    """The paste-back head mask drawn in the render's pixel grid (the crop maps to the whole render)."""
    to_render = cv2.invertAffineTransform(crop_to_source_matrix(crop_quad, resolution))
    points = landmarks @ to_render[:, :2].T + to_render[:, 2]
    values, (y0, y1, x0, x1) = head_mask(points, (resolution, resolution), mask)
    inside = np.zeros((resolution, resolution), np.float32)
    inside[y0:y1, x0:x1] = values
    return inside


def stitch_frame(generator, code, inverse_transform: torch.Tensor | None, edited: torch.Tensor,
                 crop: np.ndarray, inside: np.ndarray, steps: int, lr: float) -> tuple[np.ndarray, float]:
    """`steps` Adam steps on a copy of `generator` for one frame: its render of `code` (W+ or S, a batch of
    one; through `inverse_transform`, None for StyleGAN2's aligned render) should equal the original `crop`
    (uint8) where `inside` is 0 and the edited render `edited` ([3, R, R]) where it is 1.
    Returns (the stitched crop as uint8, its mean change from the plain edit)."""
    from ..tune.pti import tunable_parameters

    device = next(generator.parameters()).device
    resolution = generator.img_resolution
    inside_t = torch.from_numpy(inside).to(device)[None, None]
    original = generator_target(crop, resolution)[None].to(device)
    goal = edited[None].to(device)
    tuned = copy.deepcopy(generator)
    params = [p for _, p in tunable_parameters(tuned)]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=lr)
    transform = inverse_transform[None].to(device) if inverse_transform is not None else None
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            image = synthesize(tuned, code, transform)
            loss = (((image - original) ** 2) * (1 - inside_t)).mean() + (((image - goal) ** 2) * inside_t).mean()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        image = synthesize(tuned, code, transform)
    return to_uint8(image)[0], float((image - goal).abs().mean())
