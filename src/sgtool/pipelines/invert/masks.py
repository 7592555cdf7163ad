"""Masks of masked inversion (Image2StyleGAN++): white where the photo is matched, black where it is unknown.

A mask is a grayscale image (colour images are averaged); soft values weigh pixels. The projection's losses are
weighted by it (`project(..., mask=...)`), so what lies under the black part is filled by the generator. For an
aligned crop the mask is resized to it; for a photo whose face is aligned first, the mask is drawn on the photo
and warped with it (its size must then be the photo's).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from ...errors import SgtoolError
from ..shared.images import read_image

# Below this fraction of the picture the mask leaves too little to match (one 64 px row is 1/64).
MIN_KNOWN_FRACTION = 1e-3
ASPECT_TOLERANCE = 0.01


KNOWN = "where the photo is known (black only where it should be filled)"
REGION = "the region to edit (the rest keeps the unedited render)"


def read_mask(path: str | Path, white: str = KNOWN) -> np.ndarray:
    """The mask file as float32 [H, W] in [0, 1]; one line when it is not an image or is white nowhere (`white`:
    what white marks, for that line)."""
    path = Path(path)
    mask = read_image(path).astype(np.float32).mean(axis=2) / 255.0
    if float(mask.mean()) < MIN_KNOWN_FRACTION:
        raise SgtoolError(f"{path} is black (almost) everywhere, and white marks {white}: paint it white there")
    return mask


def aspect_differs(height: int, width: int, other_height: int, other_width: int) -> bool:
    return abs(width / height - other_width / other_height) > ASPECT_TOLERANCE * (other_width / other_height)


def fit_mask(mask: np.ndarray, height: int, width: int, name: str, note=None) -> np.ndarray:
    """`mask` resized to height x width; `note(line)` hears when that changes its aspect ratio."""
    if mask.shape == (height, width):
        return mask
    if note is not None and aspect_differs(*mask.shape, height, width):
        note(f"{name} is {mask.shape[1]}x{mask.shape[0]}, the image {width}x{height}: the mask was stretched to "
             "its size (a different aspect ratio)")
    shrinking = mask.shape[0] > height and mask.shape[1] > width
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def aligned_mask(mask: np.ndarray, name: str, photo: Path, photo_shape: tuple[int, ...], quad: np.ndarray,
                 size: int) -> np.ndarray:
    """A mask drawn on the photo, warped into the aligned crop of `quad` (corners top-left, bottom-left,
    bottom-right, top-right); beyond the photo's edge (padding the aligner invented) counts as unknown."""
    if mask.shape != tuple(photo_shape[:2]):
        raise SgtoolError(f"{name} is {mask.shape[1]}x{mask.shape[0]} but {photo} is {photo_shape[1]}x"
                          f"{photo_shape[0]}: draw the mask on the photo at its size, or invert an aligned crop "
                          "with --no-align (its mask is resized to it)")
    corners = np.float32([[0, 0], [0, size], [size, size], [size, 0]])
    warp = cv2.getPerspectiveTransform(np.asarray(quad, np.float32), corners)
    return cv2.warpPerspective(mask, warp, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=0.0)


def check_photo_size(mask: np.ndarray, name, photo: Path) -> None:
    """A mask drawn on a photo whose face is aligned first must have the photo's size (checked before aligning)."""
    from PIL import Image

    try:
        with Image.open(photo) as img:
            width, height = img.size if img.getexif().get(0x0112, 1) < 5 else img.size[::-1]  # EXIF rotations
    except (OSError, ValueError):
        return  # not an image: reading the photo says so
    if mask.shape != (height, width):
        raise SgtoolError(f"{name} is {mask.shape[1]}x{mask.shape[0]} but {photo} is {width}x{height}: draw the "
                          "mask on the photo at its size, or invert an aligned crop with --no-align (its mask is "
                          "resized to it)")


def face_mask(mask: np.ndarray, name, photo: Path, face, note=None) -> np.ndarray:
    """The mask over a `run.Face`'s aligned image: warped with the photo when the face was aligned from it,
    else resized to it."""
    if face.quad is None:
        return fit_mask(mask, *face.aligned.shape[:2], name=str(name), note=note)
    return aligned_mask(mask, str(name), photo, face.photo_shape, face.quad, face.aligned.shape[0])


def mask_weights(mask, resolution: int, device) -> torch.Tensor:
    """A mask ([H, W] array or tensor) as loss weights [1, 1, resolution, resolution] on `device`."""
    weights = torch.as_tensor(np.asarray(mask, np.float32) if not isinstance(mask, torch.Tensor) else mask,
                              dtype=torch.float32).to(device)
    if weights.ndim != 2:
        raise SgtoolError(f"a mask must be [H, W], got shape {list(weights.shape)}")
    weights = weights.clamp(0, 1)[None, None]
    if weights.shape[-2:] != (resolution, resolution):
        weights = torch.nn.functional.interpolate(weights, size=(resolution, resolution), mode="bilinear",
                                                  align_corners=False, antialias=True)
    if float(weights.mean()) < MIN_KNOWN_FRACTION:
        raise SgtoolError("the mask is black (almost) everywhere: nothing of the target would be matched")
    return weights


def masked_mse(image: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over the pixels `weights` selects ([1, 1, H, W], soft values weigh them)."""
    if weights is None:
        return torch.nn.functional.mse_loss(image, target)
    return ((image - target).square() * weights).mean() / weights.mean()


@torch.no_grad()
def region_errors(recon: torch.Tensor, target: torch.Tensor, mask) -> dict:
    """MSE (images in [-1, 1]) where the mask is white (`known_mse`) and where it is black (`hole_mse`, the
    error against whatever the input holds there; None when the mask leaves no hole)."""
    recon = recon.reshape(1, -1, *recon.shape[-2:]).float().cpu()
    target = target.reshape(1, -1, *target.shape[-2:]).float().cpu()
    weights = mask_weights(mask, recon.shape[-1], "cpu")
    target = torch.nn.functional.interpolate(target, size=recon.shape[-2:], mode="bilinear", align_corners=False,
                                             antialias=True) if target.shape[-2:] != recon.shape[-2:] else target
    hole = 1 - weights
    return {"known_fraction": round(float(weights.mean()), 6),
            "known_mse": float(masked_mse(recon, target, weights)),
            "hole_mse": float(masked_mse(recon, target, hole)) if float(hole.mean()) >= MIN_KNOWN_FRACTION else None}
