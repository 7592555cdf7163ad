"""Alignment geometry: the FFHQ quad from key points, the unaligned crop's square, the landmarks transform
between them and the resampling of a quad into a square image.

Mesh indices for the 68-point landmarks the recipe uses (measured, see `EYE_*` / `MOUTH_CORNERS`):
we ran dlib's 68-point predictor and mediapipe's mesh on 56 images (skimage's astronaut and
matplotlib's Grace Hopper, mirrored, rotated -25..20 degrees, scaled 0.7-1.4) and, for each dlib point,
took the mesh vertex with the smallest mean distance. The means of the six matched eyelid vertices
land on dlib's eye centres (the recipe's mean of points 36-41 / 42-47) within 2.2% / 2.1% of the
interocular distance on average (iris centres 468/473: 3.6% / 3.4%; whole 16-point contours: 2.5% / 2.3%),
and vertices 61 / 291 on dlib's mouth corners 48 / 54 within 3.8% / 3.4% (76/306: 4.5% / 4.1%).

Coordinates: source pixels with pixel centres on integers (dlib's and the FFHQ script's convention).
The landmarks transform T follows stylegan3-editing's `landmarks_transforms` and `sgtool.geometry`:
both images span [-0.5, 0.5] with the origin at the centre, x right, y down; T maps aligned
coordinates to crop coordinates and inv(T) goes into `synthesis.input.transform`.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.ndimage
from PIL import Image

from ...errors import SgtoolError

# Mesh vertices matched to dlib's 68-point scheme (image-left eye = the subject's right eye = dlib 36-41).
EYE_LEFT = (7, 160, 158, 155, 153, 144)  # dlib 36, 37, 38, 39, 40, 41
EYE_RIGHT = (382, 385, 387, 249, 373, 380)  # dlib 42, 43, 44, 45, 46, 47
MOUTH_CORNERS = (61, 291)  # dlib 48, 54
RECIPES = ("ffhq", "eyes")



def key_points(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eye centres and mouth corners (each 2x2, image-left first) from 478 mesh points."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    eyes = np.stack([landmarks[list(EYE_LEFT)].mean(axis=0), landmarks[list(EYE_RIGHT)].mean(axis=0)])
    mouth = landmarks[list(MOUTH_CORNERS)].copy()
    return eyes, mouth


def quad_from_landmarks(eyes, mouth, recipe: str = "ffhq") -> np.ndarray:
    """The recipe's oriented square (4x2, source pixels) from eye centres and mouth corners.

    ffhq: NVIDIA's FFHQ definition; side = max(2 |eye_to_eye|, 1.8 |eye_to_mouth|).
    eyes: same orientation and centre, side from the eye distance alone (stylegan3-editing's aligner).
    """
    if recipe not in RECIPES:
        raise SgtoolError(f"unknown alignment recipe {recipe!r}; use one of {', '.join(RECIPES)}")
    eyes = np.asarray(eyes, dtype=np.float64)
    mouth = np.asarray(mouth, dtype=np.float64)
    eye_avg = eyes.mean(axis=0)
    eye_to_eye = eyes[1] - eyes[0]
    eye_to_mouth = mouth.mean(axis=0) - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    length = np.hypot(*x)
    if not np.isfinite(length) or length < 1e-6:
        raise SgtoolError("degenerate face landmarks (eyes and mouth coincide); cannot orient the crop")
    x /= length
    if recipe == "ffhq":
        x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    else:
        x *= np.hypot(*eye_to_eye) * 2.0
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def quad_side(quad: np.ndarray) -> float:
    quad = np.asarray(quad, dtype=np.float64)
    return float(np.hypot(*(quad[3] - quad[0])))


def crop_quad_from(quad: np.ndarray) -> np.ndarray:
    """The unaligned crop: axis-aligned square with the quad's centre and side, same corner order."""
    quad = np.asarray(quad, dtype=np.float64)
    centre = quad.mean(axis=0)
    half = quad_side(quad) / 2
    return np.array([centre + [-half, -half], centre + [-half, half], centre + [half, half], centre + [half, -half]])


def _quad_frame(quad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Q, c) with source = c + Q @ a for a in the image's [-0.5, 0.5]^2 coordinates (exact for parallelograms)."""
    quad = np.asarray(quad, dtype=np.float64)
    axes = np.stack([quad[3] - quad[0], quad[1] - quad[0]], axis=1)  # columns: the x edge, the y edge
    return axes, quad.mean(axis=0)


def transform_between(aligned_quad: np.ndarray, crop_quad: np.ndarray) -> np.ndarray:
    """T (3x3) mapping the aligned image's coordinates to the crop's, from the two quads alone.

    A point a of the aligned image is the source pixel c_a + Q_a a, which the crop shows at
    Q_c^-1 (c_a + Q_a a - c_c). For quads of equal side this is make_transform(t, angle) exactly;
    crop quads of another size give the matching similarity (a scale factor on the 2x2 part).
    """
    qa, ca = _quad_frame(aligned_quad)
    qc, cc = _quad_frame(crop_quad)
    if abs(np.linalg.det(qc)) < 1e-12 or abs(np.linalg.det(qa)) < 1e-12:
        raise SgtoolError("degenerate alignment quad (zero area); cannot compute the landmarks transform")
    qc_inv = np.linalg.inv(qc)
    transform = np.eye(3)
    transform[:2, :2] = qc_inv @ qa
    transform[:2, 2] = qc_inv @ (ca - cc)
    return transform


def transform_parameters(transform: np.ndarray) -> tuple[float, np.ndarray, float]:
    """(angle in degrees, translation in image widths, scale) of a similarity in make_transform's form.

    atan2 instead of arccos: no NaN when the two crops coincide or rounding pushes cos past 1.
    """
    transform = np.asarray(transform, dtype=np.float64)
    cos_part = (transform[0, 0] + transform[1, 1]) / 2
    sin_part = (transform[0, 1] - transform[1, 0]) / 2
    angle = math.degrees(math.atan2(sin_part, cos_part))
    return angle, transform[:2, 2].copy(), float(math.hypot(cos_part, sin_part))


def pixels_to_generator(points: np.ndarray, size: int) -> np.ndarray:
    """Pixel coordinates (pixel centres on integers) of a size x size image -> [-0.5, 0.5] coordinates."""
    return (np.asarray(points, dtype=np.float64) + 0.5) / size - 0.5


def generator_to_pixels(points: np.ndarray, size: int) -> np.ndarray:
    return (np.asarray(points, dtype=np.float64) + 0.5) * size - 0.5


def apply_transform(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return points @ np.asarray(transform)[:2, :2].T + np.asarray(transform)[:2, 2]


def source_to_quad(quad: np.ndarray, points: np.ndarray, size: int) -> np.ndarray:
    """Source pixels -> pixels of the size x size image that resamples `quad` (where a landmark lands)."""
    axes, centre = _quad_frame(quad)
    local = (np.asarray(points, dtype=np.float64) - centre) @ np.linalg.inv(axes).T
    return generator_to_pixels(local, size)


# ----------------------------------------------------------------------------------------------------------
# Resampling (NVIDIA's FFHQ recipe: shrink, crop with border, blurred reflect padding, quad warp, resize)


def crop_from_quad(rgb: np.ndarray, quad: np.ndarray, size: int, supersample: int = 4,
                   padding: bool = True) -> np.ndarray:
    """Resample the source region `quad` to a size x size uint8 image exactly as the FFHQ script does.

    The warp runs at `supersample` x size (NVIDIA: 4096 for 1024) with bilinear sampling and is then
    reduced with Lanczos, so the result is antialiased however much the face is shrunk.
    """
    img = Image.fromarray(np.ascontiguousarray(rgb))
    quad = np.array(quad, dtype=np.float64)
    qsize = quad_side(quad)
    transform_size = int(size * supersample)

    shrink = int(np.floor(qsize / size * 0.5))
    if shrink > 1:
        rsize = (int(np.rint(float(img.size[0]) / shrink)), int(np.rint(float(img.size[1]) / shrink)))
        img = img.resize(rsize, Image.Resampling.LANCZOS)
        quad /= shrink
        qsize /= shrink

    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min())),
            int(np.ceil(quad[:, 0].max())), int(np.ceil(quad[:, 1].max())))
    crop = (max(crop[0] - border, 0), max(crop[1] - border, 0),
            min(crop[2] + border, img.size[0]), min(crop[3] + border, img.size[1]))
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad -= crop[0:2]

    pad = (int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min())),
           int(np.ceil(quad[:, 0].max())), int(np.ceil(quad[:, 1].max())))
    pad = (max(-pad[0] + border, 0), max(-pad[1] + border, 0),
           max(pad[2] - img.size[0] + border, 0), max(pad[3] - img.size[1] + border, 0))
    if padding and max(pad) > border - 4:
        pad = np.maximum(pad, max(int(np.rint(qsize * 0.3)), 1))  # >= 1: the mask divides by it
        arr = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
        h, w, _ = arr.shape
        y, x, _ = np.ogrid[:h, :w, :1]
        # 1 at the outer edge of the padding, 0 inside the original pixels: blend towards blur, then the median.
        mask = np.maximum(1.0 - np.minimum(np.float32(x) / pad[0], np.float32(w - 1 - x) / pad[2]),
                          1.0 - np.minimum(np.float32(y) / pad[1], np.float32(h - 1 - y) / pad[3]))
        blur = qsize * 0.02
        arr += (scipy.ndimage.gaussian_filter(arr, [blur, blur, 0]) - arr) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.rint(arr), 0, 255)), "RGB")
        quad += pad[:2]

    # PIL samples at pixel centres with pixel edges on integers; the quad uses centres on integers.
    img = img.transform((transform_size, transform_size), Image.Transform.QUAD, (quad + 0.5).flatten(),
                        Image.Resampling.BILINEAR)
    if size < transform_size:
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(img)
