"""Face alignment: FFHQ-aligned crops, unaligned crops and the landmarks transform between them.

Pipeline per image: mediapipe finds every face and its mesh (`faces.py`); the mesh gives the eye centres
and mouth corners of the 68-point scheme the FFHQ recipe was defined on; the recipe turns them into an
oriented square `quad` in source pixels; the aligned image is that quad resampled to size x size, the
unaligned crop is the axis-aligned square with the same centre and side. Because both are exact
resamplings of known quads, the transform between them is computed from the quads, not re-detected.

The quads, the transform and the resampling are in `geometry.py`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ...errors import SgtoolError
from ...progress import SILENT, Reporter
from ...settings import AlignSettings
from ...utils.batch import Shard
from ...utils.io import save_image, save_npy, write_json
from ...utils.records import read_json
from ..shared.batch import Batch, Item, collect
from ..shared.images import read_image
from .faces import FaceFinder, Rejection, default_finder
from .geometry import (RECIPES, crop_from_quad, crop_quad_from, key_points, quad_from_landmarks, quad_side,
                       transform_between, transform_parameters)

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
        data = read_json(summary_path)
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
        data = read_json(summary_path)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("config") != config:
        return {}
    by_source: dict[str, list[dict]] = {}
    for record in data.get("faces", []):
        by_source.setdefault(record["source"], []).append(record)
    return {src: recs for src, recs in by_source.items()
            if all(Path(r["aligned"]).exists() and Path(r["crop"]).exists() for r in recs)}
