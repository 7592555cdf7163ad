"""Face finding with mediapipe: full-range detector over an image pyramid, then the face mesh per face.

mediapipe's face mesh on a whole photo only sees selfie-sized faces, and its full-range detector squeezes
the whole image into 192x192 (without keeping the aspect ratio), so on its own it misses every face
smaller than about a tenth of the image. We therefore run the detector on square tiles at several scales
(each level sees faces of 8-90% of its tile side), merge the detections, and run the mesh on a padded,
upright crop around each one. Coordinates returned here are source pixels with pixel centres on integers
(the convention of dlib and of the FFHQ recipe).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from dataclasses import dataclass

import cv2
import numpy as np

from ...errors import SgtoolError

# Each pyramid level detects faces whose box is ~8-90% of the tile side; levels shrink by LEVEL_STEP so a face
# too small for one level is at least MIN_FRACTION of the next one.
MIN_FRACTION = 0.1
LEVEL_STEP = 2.5
TILE_STRIDE = 0.7  # tiles overlap by 30% of their side, so a face < 0.3 tile fits wholly in one of them
DETECTOR_INPUT = 384  # tiles are downscaled to this before the detector (it works at 192 anyway)
MESH_CROP = 256  # side of the upright crop handed to the face mesh
MESH_PAD = 2.0  # that crop spans this many detector-box sides
GREY = (127, 127, 127)
CONFIRM_SCORE = 0.5  # the short-range detector's threshold on the upright crop
CONFIRM_RADIUS = 0.2  # its box centre within this fraction of the crop from the crop's centre


@dataclass
class Detection:
    box: np.ndarray  # [x0, y0, x1, y1] in source pixels
    score: float
    eyes: np.ndarray  # 2x2: the eye on the image's left, then the one on its right

    @property
    def size(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def centre(self) -> np.ndarray:
        return (self.box[:2] + self.box[2:]) / 2


@dataclass
class Face:
    score: float
    box: np.ndarray  # detector box [x0, y0, x1, y1]
    landmarks: np.ndarray  # 478x2 face-mesh points (468 mesh + 10 iris) in source pixels


@dataclass
class Rejection:
    """A detector candidate that did not count as a face, and why (recorded in alignment.json)."""

    box: np.ndarray
    score: float
    reason: str

    def record(self) -> dict:
        return {"box": [round(float(v), 2) for v in self.box], "score": round(self.score, 6), "reason": self.reason}


@contextlib.contextmanager
def _native_stderr_silenced():
    """mediapipe's C++ graph prints log lines straight to fd 2 when it starts; keep the terminal clean."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def pyramid_tiles(height: int, width: int, min_face_size: float) -> list[tuple[int, int, int]]:
    """Square windows (x0, y0, side) that together let the detector see every face >= min_face_size.

    Level 0 is the whole image (letterboxed); each further level divides the side by LEVEL_STEP until the
    previous level could already see faces of min_face_size.
    """
    side = max(height, width)
    tiles = [(0, 0, side)]
    while side * MIN_FRACTION > min_face_size and side / LEVEL_STEP >= 64:
        side = int(round(side / LEVEL_STEP))
        stride = side * TILE_STRIDE
        xs = _positions(width, side, stride)
        ys = _positions(height, side, stride)
        tiles += [(x, y, side) for y in ys for x in xs]
    return tiles


def _positions(extent: int, side: int, stride: float) -> list[int]:
    if extent <= side:
        return [0]
    count = math.ceil((extent - side) / stride) + 1
    return [int(round(v)) for v in np.linspace(0, extent - side, count)]


def _square_tile(rgb: np.ndarray, x0: int, y0: int, side: int) -> tuple[np.ndarray, float]:
    """The window padded to a square with grey and downscaled; returns it and its scale (tile px per source px)."""
    window = rgb[y0:y0 + side, x0:x0 + side]
    h, w = window.shape[:2]
    if h != side or w != side:
        window = cv2.copyMakeBorder(window, 0, side - h, 0, side - w, cv2.BORDER_CONSTANT, value=GREY)
    scale = min(1.0, DETECTOR_INPUT / side)
    if scale < 1.0:
        window = cv2.resize(window, (DETECTOR_INPUT, DETECTOR_INPUT), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(window), scale


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two [x0, y0, x1, y1] boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def merge_detections(detections: list[Detection], iou_threshold: float = 0.3) -> list[Detection]:
    """Non-maximum suppression across tiles and levels; a box inside a kept one counts as the same face."""
    kept: list[Detection] = []
    for det in sorted(detections, key=lambda d: -d.score):
        duplicate = False
        for other in kept:
            inside = np.all(np.abs(det.centre - other.centre) < 0.35 * other.size)
            if box_iou(det.box, other.box) > iou_threshold or (inside and det.size < 1.6 * other.size
                                                            and other.size < 1.6 * det.size):
                duplicate = True
                break
        if not duplicate:
            kept.append(det)
    return kept


class FaceFinder:
    """Holds mediapipe's full-range detector and face mesh (building them takes ~0.1 s; reuse one)."""

    def __init__(self, min_score: float = 0.5):
        try:
            import mediapipe as mp
        except ImportError as exc:  # pragma: no cover - mediapipe is a hard dependency
            raise SgtoolError(f"mediapipe is needed for face alignment ({exc}); "
                              "run `pip install mediapipe==0.10.21`") from None
        with _native_stderr_silenced():
            self._detector = mp.solutions.face_detection.FaceDetection(model_selection=1,
                                                                       min_detection_confidence=min_score)
            self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=4,
                                                         refine_landmarks=True, min_detection_confidence=0.3)
            # Second opinion on the upright crop: there a face is large and level, what the short-range model
            # knows best, while face-like patterns the full-range pass caught at one scale (a mission patch)
            # no longer pass.
            self._confirm = mp.solutions.face_detection.FaceDetection(model_selection=0,
                                                                      min_detection_confidence=CONFIRM_SCORE)
            # The graphs open their models on worker threads, which log natively; a first run waits for that.
            blank = np.full((64, 64, 3), GREY[0], dtype=np.uint8)
            self._detector.process(blank)
            self._mesh.process(blank)
            self._confirm.process(blank)
        self._lock = threading.Lock()  # mediapipe graphs are not re-entrant

    def close(self) -> None:
        self._detector.close()
        self._mesh.close()
        self._confirm.close()

    def _run(self, graph, image: np.ndarray):
        # Inference also logs natively (once per graph, but when is mediapipe's business).
        with self._lock, _native_stderr_silenced():
            return graph.process(image)

    def detect(self, rgb: np.ndarray, min_face_size: float = 0) -> list[Detection]:
        """Every face box the full-range detector finds over the pyramid, merged, largest first."""
        height, width = rgb.shape[:2]
        found: list[Detection] = []
        for x0, y0, side in pyramid_tiles(height, width, min_face_size):
            tile, scale = _square_tile(rgb, x0, y0, side)
            result = self._run(self._detector, tile)
            for det in result.detections or []:
                rel = det.location_data.relative_bounding_box
                box = np.array([rel.xmin, rel.ymin, rel.xmin + rel.width, rel.ymin + rel.height]) * tile.shape[1]
                # A face cut by an inner tile edge is found whole in an overlapping tile or a coarser level.
                margin = 0.01 * tile.shape[1]
                cut_left = box[0] < margin and x0 > 0
                cut_top = box[1] < margin and y0 > 0
                cut_right = box[2] > tile.shape[1] - margin and x0 + side < width
                cut_bottom = box[3] > tile.shape[0] - margin and y0 + side < height
                if side != max(height, width) and (cut_left or cut_top or cut_right or cut_bottom):
                    continue
                points = det.location_data.relative_keypoints
                eyes = np.array([[points[0].x, points[0].y], [points[1].x, points[1].y]]) * tile.shape[1]
                offset = np.array([x0, y0], dtype=np.float64)
                box = box / scale + np.tile(offset, 2)
                eyes = eyes / scale + offset
                box = np.clip(box, [0, 0, 0, 0], [width, height, width, height])
                detection = Detection(box=box, score=float(det.score[0]), eyes=eyes)
                if detection.size >= min_face_size:
                    found.append(detection)
        merged = merge_detections(found)
        return sorted(merged, key=lambda d: -d.size)

    def upright_crop(self, rgb: np.ndarray, detection: Detection) -> tuple[np.ndarray, np.ndarray]:
        """(MESH_CROP-pixel crop around the detection, rotated so that the detector's eye line is level; the 2x3
        source -> crop matrix). The mesh's own detector only handles moderate tilt; the full-range detector
        finds faces at any angle."""
        eye_vec = detection.eyes[1] - detection.eyes[0]
        angle = math.atan2(eye_vec[1], eye_vec[0]) if np.hypot(*eye_vec) > 1e-6 else 0.0
        centre = detection.centre
        scale = MESH_CROP / (detection.size * MESH_PAD)
        cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
        # source -> crop: rotate by -angle about the face centre, scale, move the centre to the crop centre.
        to_crop = np.array([[cos, sin, 0.0], [-sin, cos, 0.0]])
        to_crop[:, 2] = (MESH_CROP - 1) / 2 - to_crop[:, :2] @ centre
        crop = cv2.warpAffine(rgb, to_crop, (MESH_CROP, MESH_CROP), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        return crop, to_crop

    def mesh(self, rgb: np.ndarray, detection: Detection) -> np.ndarray | None:
        """478 face-mesh points for one detection (None when the mesh finds no face there)."""
        points, _ = self._mesh_and_crop(rgb, detection)
        return points

    def _mesh_and_crop(self, rgb: np.ndarray, detection: Detection):
        crop, to_crop = self.upright_crop(rgb, detection)
        result = self._run(self._mesh, crop)
        if not result.multi_face_landmarks:
            return None, crop
        candidates = []
        for face in result.multi_face_landmarks:
            # mediapipe's normalised coordinates put pixel edges at 0 and 1; move to pixel-centre coordinates.
            pts = np.array([[p.x, p.y] for p in face.landmark], dtype=np.float64) * MESH_CROP - 0.5
            candidates.append(pts)
        crop_centre = np.array([(MESH_CROP - 1) / 2] * 2)
        best = min(candidates, key=lambda pts: np.hypot(*(pts.mean(axis=0) - crop_centre)))
        if np.hypot(*(best.mean(axis=0) - crop_centre)) > MESH_CROP / MESH_PAD / 2:
            return None, crop  # the mesh locked onto a neighbouring face
        to_source = cv2.invertAffineTransform(to_crop)
        return best @ to_source[:, :2].T + to_source[:, 2], crop

    def confirmed(self, crop: np.ndarray) -> bool:
        """Whether the short-range detector also sees a face at the centre of the upright crop."""
        result = self._run(self._confirm, crop)
        for det in result.detections or []:
            rel = det.location_data.relative_bounding_box
            centre = np.array([rel.xmin + rel.width / 2, rel.ymin + rel.height / 2])
            if np.hypot(*(centre - 0.5)) < CONFIRM_RADIUS:
                return True
        return False

    def find(self, rgb: np.ndarray, min_face_size: float = 0, max_faces: int | None = None) -> list[Face]:
        """Detected faces with mesh landmarks, largest first; duplicates of one face are dropped."""
        return self.find_with_rejections(rgb, min_face_size, max_faces)[0]

    def find_with_rejections(self, rgb: np.ndarray, min_face_size: float = 0,
                             max_faces: int | None = None) -> tuple[list[Face], list[Rejection]]:
        """`find`, plus the candidates that did not count and why: no mesh on them, or not confirmed by a
        second detector pass on the upright crop."""
        faces: list[Face] = []
        rejected: list[Rejection] = []
        for detection in self.detect(rgb, min_face_size):
            points, crop = self._mesh_and_crop(rgb, detection)
            if points is None:
                rejected.append(Rejection(detection.box, detection.score, "the face mesh finds no face there"))
                continue
            if any(_same_face(points, face.landmarks) for face in faces):
                continue
            if not self.confirmed(crop):
                rejected.append(Rejection(detection.box, detection.score, "a second detector pass on the upright "
                                          f"crop sees no face (short-range model, score < {CONFIRM_SCORE})"))
                continue
            faces.append(Face(score=detection.score, box=detection.box, landmarks=points))
            if max_faces is not None and len(faces) >= max_faces:
                break
        return faces, rejected


def _same_face(a: np.ndarray, b: np.ndarray) -> bool:
    span = np.ptp(b, axis=0).max()
    return float(np.hypot(*(a.mean(axis=0) - b.mean(axis=0)))) < 0.2 * span


_default_finder: FaceFinder | None = None


def default_finder() -> FaceFinder:
    """One shared FaceFinder per process (the video pipeline calls align_image for every frame)."""
    global _default_finder
    if _default_finder is None:
        _default_finder = FaceFinder()
    return _default_finder
