"""Face alignment: FFHQ-aligned crops, unaligned crops and the landmarks transform between them.

Pipeline per image: mediapipe finds every face and its mesh (`faces.py`); the mesh gives the eye centres
and mouth corners of the 68-point scheme the FFHQ recipe was defined on; the recipe turns them into an
oriented square `quad` in source pixels; the aligned image is that quad resampled to size x size, the
unaligned crop is the axis-aligned square with the same centre and side. Because both are exact
resamplings of known quads, the transform between them is computed from the quads, not re-detected.

Mesh indices for the 68-point landmarks the recipe uses (measured, see `EYE_*` / `MOUTH_CORNERS`):
we ran dlib's 68-point predictor and this module's mesh on 56 images (skimage's astronaut and
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

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import scipy.ndimage
from PIL import Image

from ..errors import SgtoolError
from ..progress import SILENT, Reporter
from ..settings import AlignSettings
from ..utils.batch import Shard
from ..utils.io import save_image, save_npy, write_json
from .batch import Batch, Item, collect
from .faces import FaceFinder, Rejection, default_finder
from .images import read_image

# Mesh vertices matched to dlib's 68-point scheme (image-left eye = the subject's right eye = dlib 36-41).
EYE_LEFT = (7, 160, 158, 155, 153, 144)  # dlib 36, 37, 38, 39, 40, 41
EYE_RIGHT = (382, 385, 387, 249, 373, 380)  # dlib 42, 43, 44, 45, 46, 47
MOUTH_CORNERS = (61, 291)  # dlib 48, 54
RECIPES = ("ffhq", "eyes")
DEFAULT_MIN_FACE = 48
SUMMARY_FILE = "alignment.json"
PROGRESS_SAVE_SECONDS = 30.0  # how much work a killed batch can lose (alignment.json is rewritten that often)


@dataclass
class AlignedFace:
    """One face: both crops, their quads in source pixels and the transform between them."""

    aligned: np.ndarray  # uint8 size x size x 3, FFHQ recipe
    crop: np.ndarray  # uint8 size x size x 3, axis-aligned square of the same centre and side
    quad: np.ndarray  # 4x2: c-x-y, c-x+y, c+x+y, c+x-y (top-left, bottom-left, bottom-right, top-right)
    crop_quad: np.ndarray  # 4x2, same corner order
    transform: np.ndarray  # 3x3 T: aligned -> crop coordinates (generator convention)
    inverse_transform: np.ndarray  # inv(T): the value for synthesis.input.transform
    score: float
    eyes: np.ndarray  # 2x2: left, right eye centre in the image
    mouth: np.ndarray  # 2x2: left, right mouth corner in the image
    landmarks: np.ndarray | None = None  # 478x2 mesh points in source pixels
    recipe: str = "ffhq"

    @property
    def angle(self) -> float:
        return transform_parameters(self.transform)[0]

    @property
    def translate(self) -> np.ndarray:
        return transform_parameters(self.transform)[1]

    def record(self) -> dict:
        """JSON-ready description (no pixels, no mesh)."""
        angle, translate, _ = transform_parameters(self.transform)
        return {"score": round(float(self.score), 6), "eyes": self.eyes.tolist(), "mouth": self.mouth.tolist(),
                "quad": self.quad.tolist(), "crop_quad": self.crop_quad.tolist(),
                "transform": self.transform.tolist(), "inverse_transform": self.inverse_transform.tolist(),
                "angle": angle, "translate": translate.tolist(), "recipe": self.recipe}


# ----------------------------------------------------------------------------------------------------------
# Geometry


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


def align_landmarks(rgb: np.ndarray, eyes, mouth, size: int = 1024, recipe: str = "ffhq",
                    score: float = 1.0, landmarks: np.ndarray | None = None, crop_quad: np.ndarray | None = None,
                    supersample: int = 4, padding: bool = True) -> AlignedFace:
    """Both crops and the transform from given key points (no detection; e.g. smoothed video landmarks).

    `crop_quad` overrides the unaligned crop's square (a video keeps one for many frames).
    """
    _check_size(size)
    quad = quad_from_landmarks(eyes, mouth, recipe)
    crop_quad = crop_quad_from(quad) if crop_quad is None else np.asarray(crop_quad, dtype=np.float64)
    transform = transform_between(quad, crop_quad)
    return AlignedFace(aligned=crop_from_quad(rgb, quad, size, supersample, padding),
                       crop=crop_from_quad(rgb, crop_quad, size, supersample, padding),
                       quad=quad, crop_quad=crop_quad, transform=transform,
                       inverse_transform=np.linalg.inv(transform), score=float(score),
                       eyes=np.asarray(eyes, dtype=np.float64), mouth=np.asarray(mouth, dtype=np.float64),
                       landmarks=landmarks, recipe=recipe)


def _check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise SgtoolError(f"--size must be an integer of at least 8 pixels, got {size!r}")


def align_image(rgb: np.ndarray, size: int = 1024, recipe: str = "ffhq", max_faces: int | None = None,
                min_face_size: float = DEFAULT_MIN_FACE, finder: FaceFinder | None = None,
                supersample: int = 4, padding: bool = True, rejected: list | None = None) -> list[AlignedFace]:
    """Every face of an RGB uint8 image, aligned; largest first (an empty list when there is none).
    `rejected`: a list that receives the detector candidates that did not count (`faces.Rejection`)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise SgtoolError(f"align_image expects an HxWx3 uint8 RGB array, got {rgb.dtype} {rgb.shape}")
    _check_size(size)
    if recipe not in RECIPES:
        raise SgtoolError(f"unknown alignment recipe {recipe!r}; use one of {', '.join(RECIPES)}")
    if max_faces is not None and max_faces < 1:
        raise SgtoolError(f"--max-faces must be at least 1, got {max_faces}")
    finder = finder or default_finder()
    found = []
    faces, rejections = finder.find_with_rejections(rgb, min_face_size=min_face_size)
    for face in faces:
        eyes, mouth = key_points(face.landmarks)
        try:
            quad = quad_from_landmarks(eyes, mouth, recipe)
        except SgtoolError as exc:
            rejections.append(Rejection(face.box, face.score, f"its landmarks give no alignment ({exc})"))
            continue
        found.append((quad_side(quad), face, eyes, mouth))
    found.sort(key=lambda item: -item[0])
    if rejected is not None:
        rejected.extend(rejections)
    if max_faces is not None:
        found = found[:max_faces]
    return [align_landmarks(rgb, eyes, mouth, size, recipe, score=face.score, landmarks=face.landmarks,
                            supersample=supersample, padding=padding)
            for _, face, eyes, mouth in found]


# ----------------------------------------------------------------------------------------------------------
# Files and the `sgtool align` batch


def align_file(path: str | os.PathLike, size: int = 1024, recipe: str = "ffhq", max_faces: int | None = None,
               min_face_size: float = DEFAULT_MIN_FACE, finder: FaceFinder | None = None,
               supersample: int = 4, padding: bool = True, rejected: list | None = None) -> list[AlignedFace]:
    """align_image on a file (SgtoolError for files that cannot be read)."""
    return align_image(read_image(path), size=size, recipe=recipe, max_faces=max_faces,
                       min_face_size=min_face_size, finder=finder, supersample=supersample, padding=padding,
                       rejected=rejected)


def load_alignment(path: str | os.PathLike) -> dict:
    """Read an alignment.json back: its face records with quads/transforms/key points as float64 arrays.

    Files written before the batch runner named their failures "failures" ({"source", "error"}); they
    come back under "failed" with "input", as the current ones.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SgtoolError(f"{path}: no such file (run `sgtool align` first)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SgtoolError(f"{path} is not an alignment.json ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("faces"), list):
        raise SgtoolError(f"{path} is not an alignment.json (no 'faces' list)")
    for record in data["faces"]:
        for key in ("eyes", "mouth", "quad", "crop_quad", "transform", "inverse_transform", "translate"):
            if key in record:
                record[key] = np.asarray(record[key], dtype=np.float64)
    if "failed" not in data:
        data["failed"] = [{"input": f.get("source"), "error": f.get("error")} for f in data.pop("failures", [])]
    return data


def landmarks_transforms(records: Iterable[dict]) -> dict:
    """stylegan3-editing's landmarks_transforms dict: aligned image file name -> (angle, translation, T, inv(T))."""
    out = {}
    for record in records:
        transform = np.asarray(record["transform"], dtype=np.float64)
        angle, translate, _ = transform_parameters(transform)
        out[Path(record["aligned"]).name] = (angle, translate, transform,
                                             np.asarray(record["inverse_transform"], dtype=np.float64))
    return out


def save_landmarks_transforms(records: Iterable[dict], path: str | os.PathLike) -> Path:
    """Write the dict as stylegan3-editing does: np.save of a dict, read back by their code with
    np.load(path, allow_pickle=True).item()."""
    mapping = landmarks_transforms(records)
    holder = np.empty((), dtype=object)
    holder[()] = mapping
    return save_npy(holder, path, allow_pickle=True)


def crop_config(settings: AlignSettings) -> dict:
    """The settings the crops and transforms depend on: an earlier run is reused only under the same ones."""
    return settings.model_dump(include={"size", "recipe", "max_faces", "min_face_size", "supersample", "padding"})


def align_batch(paths: Iterable[str | os.PathLike], settings: AlignSettings | None = None,
                shard: Shard | None = None, reporter: Reporter = SILENT, finder: FaceFinder | None = None) -> dict:
    """Align every face of every image file/folder/glob into `settings.outdir`; returns the alignment.json summary.

    Per face: NAME_faceK_aligned.png and NAME_faceK_crop.png. alignment.json holds the batch items
    (an input without a face, or unreadable, is a failed item; the others are still written), `faces`
    (one record per face, what --transforms and `load_alignment` read) and `config` (`crop_config`).
    With skip_existing, inputs whose faces an earlier run with the same config recorded, and whose files
    exist, are kept. The faces done so far are saved every PROGRESS_SAVE_SECONDS, so a killed run can be
    resumed that way.
    """
    settings = settings or AlignSettings()
    outdir = Path(settings.outdir)
    batch = Batch("align", collect(paths), outdir, shard, reporter)
    summary_path = outdir / batch.file_name(SUMMARY_FILE)
    config = crop_config(settings)
    earlier = _earlier_faces(summary_path, config, {str(item.source) for item in batch.all_items})
    faces = _recorded_faces(summary_path, config) if settings.skip_existing else {}
    finder = finder or default_finder()
    saved = [time.monotonic()]

    def process(item: Item) -> dict:
        rejected: list = []
        faces[str(item.source)] = _align_item(item, outdir, settings, finder, rejected)
        if time.monotonic() - saved[0] > PROGRESS_SAVE_SECONDS:
            write_json({"config": config, "faces": [f for records in faces.values() for f in records]},
                       summary_path)
            saved[0] = time.monotonic()
        return {**_item_record(faces[str(item.source)]), "rejected": [r.record() for r in rejected]}

    def skip(item: Item) -> dict | None:
        records = faces.get(str(item.source))
        return _item_record(records) if records else None

    report = batch.run(process, skip=skip if settings.skip_existing else None, label="aligning")
    done = [face for r in report.results if r.status in ("ok", "skipped") for face in faces[str(r.item.source)]]
    extra: dict = {"config": config, "faces": earlier + done,
                   "kept_from_earlier_runs": sorted({face["source"] for face in earlier})}
    if settings.save_transforms is not None:
        target = settings.save_transforms.with_name(batch.file_name(settings.save_transforms.name))
        extra["transforms"] = str(save_landmarks_transforms(done, target))
    return {**report.write(SUMMARY_FILE, settings.record(), **extra), "exit_code": report.exit_code}


def _align_item(item: Item, outdir: Path, settings: AlignSettings, finder: FaceFinder,
                rejected: list) -> list[dict]:
    found = align_file(item.source, size=settings.size, recipe=settings.recipe, max_faces=settings.max_faces,
                       min_face_size=settings.min_face_size, finder=finder, supersample=settings.supersample,
                       padding=settings.padding, rejected=rejected)
    if not found:
        why = f"; {len(rejected)} candidate(s) rejected: {rejected[0].reason}" if rejected else ""
        raise SgtoolError(f"no face found in {item.source} (faces under --min-face-size "
                          f"{settings.min_face_size:g} px are ignored{why})")
    records = []
    for k, face in enumerate(found):
        aligned = save_image(face.aligned, outdir / f"{item.name}_face{k}_aligned.png")
        crop = save_image(face.crop, outdir / f"{item.name}_face{k}_crop.png")
        records.append({"source": str(item.source), "face": k, **face.record(), "aligned": str(aligned),
                        "crop": str(crop)})
    return records


def _item_record(records: list[dict]) -> dict:
    return {"outputs": [path for r in records for path in (r["aligned"], r["crop"])], "faces_found": len(records)}


def _earlier_faces(summary_path: Path, config: dict, sources: set[str]) -> list[dict]:
    """Faces an earlier run into the same folder recorded for other inputs: kept, so runs add up.

    When those were aligned with other crop settings the run is refused (the two sets would not fit
    together, and rewriting alignment.json would silently drop them).
    """
    try:
        data = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict) or not isinstance(data.get("faces"), list):
        return []
    kept = [face for face in data["faces"] if isinstance(face, dict) and face.get("source") not in sources]
    if kept and data.get("config") != config:
        differ = ", ".join(f"{k} {data.get('config', {}).get(k)!r} there vs {v!r} now" for k, v in config.items()
                           if (data.get("config") or {}).get(k) != v)
        raise SgtoolError(f"{summary_path} records faces aligned with other settings ({differ}); use another "
                          "--outdir, or delete that file to start the folder over")
    return [face for face in data["faces"] if isinstance(face, dict) and face.get("source") not in sources]


def _recorded_faces(summary_path: Path, config: dict) -> dict[str, list[dict]]:
    """Face records of an earlier run with the same config whose output files all exist, by input."""
    try:
        data = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("config") != config:
        return {}
    by_source: dict[str, list[dict]] = {}
    for record in data.get("faces", []):
        by_source.setdefault(record["source"], []).append(record)
    return {src: recs for src, recs in by_source.items()
            if all(Path(r["aligned"]).exists() and Path(r["crop"]).exists() for r in recs)}
