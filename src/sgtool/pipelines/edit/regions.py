"""`--region` and `--scribble` on whole photos: the region (or the painted copy) is drawn in the photo's pixels,
warped into each face's render frame (the aligned crop for StyleGAN2, the unaligned crop for StyleGAN3) exactly
as `paste` maps renders back, and each face it touches gets the masked local edit of `local.py`; the faces it
does not touch keep the photo's pixels.

`--region NAME` names a face part instead of a file, drawn for every face from its mediapipe face-mesh landmarks
(no parsing network): see FACE_PARTS. A file of that name, when one exists, wins.

    regions = PhotoRegions(settings, photo, path)     # one line when the file does not fit the photo
    target = regions.for_face(face.landmarks, face.paste_quad(), face.mask, resolution)   # None: untouched
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ...errors import SgtoolError
from ...progress import SILENT, Reporter
from ..invert.masks import MIN_KNOWN_FRACTION, REGION, read_mask
from ..shared.images import generator_target, read_image
from ..shared.render import device_of
from .local import local_edit, local_lpips, scribble_edit, stroke_mask
from .paste import head_polygon, to_frame

FACE_PARTS = {
    "mouth": "the lips and the mouth between them",
    "eyes": "both eyes (lids and eyeballs)",
    "eyebrows": "both eyebrows",
    "nose": "the nose, bridge to nostrils",
    "face": "the face mesh's outline, hairline to chin",
    "skin": "that outline less the eyes, eyebrows and mouth",
    "hair": "the paste-back head outline beyond the face mesh: hairline, top of the head and what borders the "
            "face (a landmark estimate, no hair segmentation)",
}
PART_MARGIN = 0.04  # parts are grown by this fraction of the face's size (the mesh hugs lids and lips)


def face_part_name(region) -> str | None:
    """The face part `--region` names (None: it is a file)."""
    if region is None or str(region) not in FACE_PARTS or Path(region).is_file():
        return None
    return str(region)


def part_mask(landmarks: np.ndarray, name: str, shape: tuple[int, ...], mask_settings) -> np.ndarray:
    """The named part of one face as a mask [H, W] in {0, 1} over the photo (`shape`) from its 478 mesh points."""
    from mediapipe.python.solutions import face_mesh_connections as mesh

    points = np.asarray(landmarks, np.float64)
    size = math.sqrt(max(cv2.contourArea(cv2.convexHull(points.astype(np.float32))), 1.0))
    groups = {"mouth": [mesh.FACEMESH_LIPS], "eyes": [mesh.FACEMESH_LEFT_EYE, mesh.FACEMESH_RIGHT_EYE],
              "eyebrows": [mesh.FACEMESH_LEFT_EYEBROW, mesh.FACEMESH_RIGHT_EYEBROW], "nose": [mesh.FACEMESH_NOSE],
              "face": [mesh.FACEMESH_FACE_OVAL]}

    def filled(polygons, grow: float) -> np.ndarray:
        out = np.zeros(shape[:2], np.uint8)
        for polygon in polygons:
            cv2.fillConvexPoly(out, np.round(polygon).astype(np.int32), 1, lineType=cv2.LINE_8)
        if grow >= 1:
            radius = int(round(grow))
            out = cv2.dilate(out, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)))
        return out

    def hulls(parts) -> list[np.ndarray]:
        return [cv2.convexHull(points[sorted({i for edge in edges for i in edge})].astype(np.float32))
                .reshape(-1, 2) for edges in parts]

    if name in ("face", "skin", "hair"):  # the outline is not grown: face and hair tile the head outline
        face = filled(hulls(groups["face"]), 0)
        if name == "face":
            return face.astype(np.float32)
        if name == "skin":
            features = filled(hulls(groups["eyes"] + groups["eyebrows"] + groups["mouth"]), PART_MARGIN * size)
            return (face & (1 - features)).astype(np.float32)
        head = filled([head_polygon(points, mask_settings)[0]], 0)
        return (head & (1 - face)).astype(np.float32)
    return filled(hulls(groups[name]), PART_MARGIN * size).astype(np.float32)


@dataclass
class FaceTarget:
    """What one face's local edit matches: the region in its render frame and, for a scribble, the painted
    copy there ([3, R, R] in [-1, 1])."""

    region: np.ndarray
    painted: object = None


class PhotoRegions:
    """A photo's --region (file or face part) or --scribble, ready to be warped into each face's frame."""

    def __init__(self, settings, photo: np.ndarray, source: Path):
        self.part = face_part_name(settings.region)
        self.mask_settings = settings.mask
        self.painted = self.mask = None
        if settings.scribble is not None:
            self.painted = read_image(settings.scribble)
            _check_size(self.painted.shape, settings.scribble, photo.shape, source)
            self.mask = stroke_mask(self.painted, photo)
            if not self.mask.any():
                raise SgtoolError(f"{settings.scribble} changes no pixel of {source}: paint strokes on a copy of "
                                  "the photo")
        elif self.part is None:
            self.mask = read_mask(settings.region, white=REGION)
            _check_size(self.mask.shape, settings.region, photo.shape, source)
        self.shape = photo.shape

    def for_face(self, landmarks: np.ndarray, quad: np.ndarray, head: tuple, resolution: int) -> FaceTarget | None:
        """The face's target in the frame of `quad` at `resolution`; None when the region misses the area
        pasted back (`head`: the paste-back mask and its (y0, y1, x0, x1))."""
        mask = part_mask(landmarks, self.part, self.shape, self.mask_settings) if self.part else self.mask
        weights, (y0, y1, x0, x1) = head
        if weights.size == 0 or not ((mask[y0:y1, x0:x1] > 0.5) & (weights > 0.5)).any():
            return None
        region = to_frame(mask, quad, resolution)
        if float(region.mean()) < MIN_KNOWN_FRACTION:  # under a thousandth of the frame: too little to match
            return None
        painted = None if self.painted is None else generator_target(to_frame(self.painted, quad, resolution),
                                                                     resolution)
        return FaceTarget(region, painted)


def face_local_edit(G, latent, target: FaceTarget, request, settings, transform=None, reporter: Reporter = SILENT,
                    label: str = "local edit"):
    """One face's latent edited inside its target only (a scribble: its strokes made real), the rest kept."""
    lpips_model = local_lpips(settings, device_of(G))
    reporter.start(label, settings.local.steps)
    try:
        def step(info):
            reporter.advance(info=f"loss {info.loss:.4f}")

        if target.painted is not None:
            return scribble_edit(G, latent, target.painted, target.region, settings.local, lpips_model, transform,
                                 step)
        return local_edit(G, latent, request, target.region, settings.local, lpips_model, transform, step)
    finally:
        reporter.finish()


def _check_size(shape, name, photo_shape, source: Path) -> None:
    if tuple(shape[:2]) != tuple(photo_shape[:2]):
        raise SgtoolError(f"{name} is {shape[1]}x{shape[0]} but {source} is {photo_shape[1]}x{photo_shape[0]}: "
                          "draw the region or strokes on the photo at its size (upright, as it is shown)")
