"""Paste a rendered (unaligned) crop back into its source frame under a soft head mask.

The crop is the generator's render of the unaligned square `crop_quad`; mapping it back is the exact
inverse of the crop resampling (pixel centres on integers, as `align.crop_from_quad`). The mask is the
convex hull of the face mesh, stretched up towards the top of the head, grown and feathered; it can be
widened with mediapipe's bundled selfie segmentation (hair and ears that the mesh does not reach).
Pixels where the mask is exactly 0 are copied from the source frame unchanged.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ...settings.common import Mask
from ..align.geometry import EYE_LEFT, EYE_RIGHT, MOUTH_CORNERS
from ..align.faces import _native_stderr_silenced

MaskSettings = Mask  # the name this section had before the settings models


class SelfieSegmenter:
    """mediapipe's bundled selfie segmentation (person vs background), built once and reused."""

    def __init__(self):
        import mediapipe as mp

        with _native_stderr_silenced():
            self._graph = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=1)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        with _native_stderr_silenced():
            result = self._graph.process(np.ascontiguousarray(rgb))
        if result.segmentation_mask is None:
            return np.zeros(rgb.shape[:2], np.float32)
        return np.asarray(result.segmentation_mask, dtype=np.float32)

    def close(self) -> None:
        self._graph.close()


def head_polygon(landmarks: np.ndarray, settings: Mask) -> tuple[np.ndarray, float]:
    """The head outline (convex polygon, source pixels) and the face size it was scaled with."""
    points = np.asarray(landmarks, dtype=np.float64)
    hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    size = math.sqrt(max(cv2.contourArea(hull.astype(np.float32)), 1.0))
    eyes = (points[list(EYE_LEFT)].mean(axis=0) + points[list(EYE_RIGHT)].mean(axis=0)) / 2
    up = eyes - points[list(MOUTH_CORNERS)].mean(axis=0)
    up /= max(np.hypot(*up), 1e-6)
    stretched = np.concatenate([hull, hull + up * settings.forehead * size])
    outline = cv2.convexHull(stretched.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    centre = outline.mean(axis=0)
    radius = np.hypot(*(outline - centre).T).mean()
    outline = centre + (outline - centre) * (1 + settings.grow * size / max(radius, 1e-6))
    return outline, size


def head_mask(landmarks: np.ndarray, frame_shape: tuple[int, int], settings: Mask,
              person: np.ndarray | None = None) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Soft mask in [0, 1] over a region of interest: (mask [h, w] float32, (y0, y1, x0, x1)).

    `person` is a full-frame selfie-segmentation probability map (used when settings.selfie).
    """
    height, width = frame_shape[:2]
    outline, size = head_polygon(landmarks, settings)
    sigma = settings.feather * size
    reach = 3 * sigma + (settings.selfie_reach * size if person is not None else 0) + 2
    x0 = int(max(0, math.floor(outline[:, 0].min() - reach)))
    y0 = int(max(0, math.floor(outline[:, 1].min() - reach)))
    x1 = int(min(width, math.ceil(outline[:, 0].max() + reach) + 1))
    y1 = int(min(height, math.ceil(outline[:, 1].max() + reach) + 1))
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), np.float32), (0, 0, 0, 0)
    hard = np.zeros((y1 - y0, x1 - x0), np.uint8)
    shift = 4  # sub-pixel polygon vertices
    pts = np.round((outline - [x0, y0]) * (1 << shift)).astype(np.int32)
    cv2.fillPoly(hard, [pts], 255, lineType=cv2.LINE_AA, shift=shift)
    mask = hard.astype(np.float32) / 255.0
    if person is not None:
        near = _dilate(hard, settings.selfie_reach * size) > 0
        mask = np.maximum(mask, np.where(near, (person[y0:y1, x0:x1] > 0.5).astype(np.float32), 0.0))
    if sigma >= 0.3:
        radius = int(math.ceil(3 * sigma))
        # A finite kernel: the mask is exactly 0 beyond 3 sigma, so those pixels stay untouched.
        mask = cv2.GaussianBlur(mask, (2 * radius + 1, 2 * radius + 1), sigma, borderType=cv2.BORDER_CONSTANT)
    return np.clip(mask, 0.0, 1.0), (y0, y1, x0, x1)


def _dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    r = max(1, int(round(radius)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask, kernel)


def crop_to_source_matrix(crop_quad: np.ndarray, size: int) -> np.ndarray:
    """2x3 affine: pixel (x, y) of the size x size crop -> source pixel (pixel centres on integers)."""
    quad = np.asarray(crop_quad, dtype=np.float64)
    axes = np.stack([quad[3] - quad[0], quad[1] - quad[0]], axis=1) / size
    origin = quad[0] + axes @ np.array([0.5, 0.5])
    return np.concatenate([axes, origin[:, None]], axis=1)


def paste(frame: np.ndarray, crop: np.ndarray, crop_quad: np.ndarray, mask: np.ndarray,
          roi: tuple[int, int, int, int], edge_feather: float = 0.02) -> np.ndarray:
    """Blend `crop` (uint8 RxRx3, the render of `crop_quad`) into a copy of `frame` under `mask`.

    The crop's own border is faded over `edge_feather` of its side so that a mask reaching past the
    crop never shows its edge.
    """
    out = frame.copy()
    y0, y1, x0, x1 = roi
    if mask.size == 0:
        return out
    quad = np.asarray(crop_quad, dtype=np.float64)
    side = float(np.hypot(*(quad[3] - quad[0])))
    size = crop.shape[0]
    # Shrink big renders to about the pasted size first: a plain bilinear warp would alias them.
    target = max(8, int(round(side)))
    if target < size:
        crop = cv2.resize(crop, (target, target), interpolation=cv2.INTER_AREA)
        size = target
    to_source = crop_to_source_matrix(quad, size)
    to_source[:, 2] -= [x0, y0]  # crop pixel -> region-of-interest pixel
    region = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(np.ascontiguousarray(crop), to_source, region, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    fade = _edge_fade(size, edge_feather)
    coverage = cv2.warpAffine(fade, to_source, region, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=0)
    alpha = (mask * coverage)[..., None]
    original = out[y0:y1, x0:x1].astype(np.float32)
    blended = original + alpha * (warped.astype(np.float32) - original)
    touched = alpha[..., 0] > 0
    out[y0:y1, x0:x1][touched] = np.clip(np.rint(blended[touched]), 0, 255).astype(np.uint8)
    return out


def to_frame(image: np.ndarray, crop_quad: np.ndarray, size: int) -> np.ndarray:
    """The part of a source frame (image or mask) under `crop_quad` as the size x size picture a render of it
    is: the inverse of `paste`'s mapping (beyond the frame's edge: 0). A quad larger than `size` pixels is
    resampled at its own size and then shrunk, so a big photo does not alias."""
    quad = np.asarray(crop_quad, dtype=np.float64)
    work = max(size, int(round(float(np.hypot(*(quad[3] - quad[0]))))))
    frame = cv2.warpAffine(np.ascontiguousarray(image), crop_to_source_matrix(quad, work), (work, work),
                           flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=0)
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA) if work > size else frame


def _edge_fade(size: int, fraction: float) -> np.ndarray:
    ramp = max(1.0, fraction * size)
    idx = np.arange(size, dtype=np.float32)
    edge = np.minimum(idx + 0.5, size - idx - 0.5) / ramp
    line = np.clip(edge, 0.0, 1.0)
    return np.minimum(line[:, None], line[None, :]).astype(np.float32)
