"""Landmarks transforms read back from files, and the one rule that finds the transform of an input.

Sources: sgtool align's `alignment.json`, stylegan3-editing's `landmarks_transforms.npy` dict
(file name -> (angle, translation, T, inv(T))), and the `invert.json` that `sgtool invert` writes
beside its latents. What is stored is inv(T), the value `synthesis(..., transform=...)` takes to
render the unaligned crop.

Matching: a name (an image file, a crop, a latent file, a key of stylegan3-editing's latents.npy)
matches the entry listed under the same file name, else one whose aligned image or unaligned crop has
the same stem (no folders, no image suffix, no `_latent`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import SgtoolError
from .batch import IMAGE_SUFFIXES
from ...utils.records import read_json


@dataclass
class TransformEntry:
    name: str  # the aligned image's file name (or the key of a stylegan3-editing dict)
    inverse_transform: np.ndarray  # 3x3 float64
    crop: str | None = None  # the unaligned crop's file name (alignment.json only)
    aligned_path: str | None = None  # where that aligned image is (alignment.json only)
    photo: str | None = None  # the photo of its largest face (alignment.json only): what `invert PHOTO` aligns


def stem(name: str | os.PathLike) -> str:
    """'out/photo_face0_aligned.png' -> 'photo_face0_aligned'; 'photo_latent.npy' -> 'photo'; '0001.jpg' -> '0001'."""
    base = Path(str(name)).name
    suffix = Path(base).suffix.lower()
    if suffix in IMAGE_SUFFIXES or suffix == ".npy":
        base = base[: -len(suffix)]
    return base.removesuffix("_latent")


def inverse_matrix(value, where: str) -> np.ndarray:
    """A 3x3 float64 matrix from a stored transform (a stylegan3-editing tuple ends with the inverse)."""
    if isinstance(value, (list, tuple)) and value and np.asarray(value[-1], dtype=object).size == 9:
        value = value[-1]
    try:
        matrix = np.asarray(value, dtype=np.float64).reshape(3, 3)
    except (TypeError, ValueError):
        raise SgtoolError(f"{where} is not a 3x3 transform") from None
    if not np.all(np.isfinite(matrix)):
        raise SgtoolError(f"{where} contains NaN or infinite values; recompute the alignment")
    return matrix


class TransformTable:
    """Transforms by image; see the module docstring for how a name finds its entry."""

    def __init__(self, entries: list[TransformEntry], source: str = ""):
        self.entries = entries
        self.source = source
        self._by_name: dict[str, TransformEntry] = {}
        self._by_stem: dict[str, TransformEntry] = {}
        self._by_photo: dict[str, TransformEntry] = {}
        for entry in entries:
            for name in (entry.name, entry.crop):
                if name:
                    self._by_name.setdefault(Path(name).name, entry)
                    self._by_stem.setdefault(stem(name), entry)
            if entry.photo:
                self._by_photo.setdefault(stem(entry.photo), entry)

    def __len__(self) -> int:
        return len(self.entries)

    def entry(self, name, latent: bool = False) -> TransformEntry | None:
        """The exact file name first (x.png and x.jpg may both be listed), else the stem; for a `latent` name, else
        the photo whose largest face it is (`invert photo.jpg` writes photo_latent.npy of photo_face0_aligned.png)."""
        return (self._by_name.get(Path(str(name)).name) or self._by_stem.get(stem(name))
                or (self._by_photo.get(stem(name)) if latent else None))

    def find(self, name, latent: bool = False) -> np.ndarray | None:
        """inv(T) for `name`, or None when the table has no entry for it."""
        entry = self.entry(name, latent)
        return None if entry is None else entry.inverse_transform

    def require(self, name, fix: str, latent: bool = False) -> np.ndarray:
        """inv(T) for `name`; `fix`, what the command's user can do instead, ends the error when there is none."""
        matrix = self.find(name, latent)
        if matrix is None:
            known = ", ".join(e.name for e in self.entries[:3]) + (" ..." if len(self.entries) > 3 else "")
            raise SgtoolError(f"no landmarks transform for {Path(str(name)).name!r} in {self.source} (it has "
                              f"{known or 'none'}); {fix}")
        return matrix

    @classmethod
    def read(cls, path) -> "TransformTable":
        """alignment.json (sgtool align) or stylegan3-editing's landmarks-transforms dict .npy."""
        from ...latents import load_npy

        path = Path(path)
        if not path.is_file():
            raise SgtoolError(f"transforms file {path} does not exist; give the alignment.json of `sgtool align` "
                              "or stylegan3-editing's landmarks_transforms.npy")
        if path.suffix.lower() == ".json":
            return cls(_alignment_entries(path), str(path))
        value = load_npy(path)
        if not isinstance(value, dict):
            raise SgtoolError(f"{path} holds a {type(value).__name__}; expected a dict of file name -> transform "
                              "(stylegan3-editing's landmarks_transforms.npy) or an alignment.json")
        return cls([TransformEntry(str(k), inverse_matrix(v, f"{path} entry {k!r}")) for k, v in value.items()],
                   str(path))

    @classmethod
    def beside(cls, latent_file) -> "TransformTable | None":
        """The transforms that `sgtool invert` recorded in the invert.json next to `latent_file`, if any."""
        record = Path(latent_file).parent / "invert.json"
        try:
            data = read_json(record)
        except (OSError, ValueError):
            return None
        entries = []
        for item in data.get("items", []) if isinstance(data, dict) else []:
            matrix = item.get("inverse_transform") if isinstance(item, dict) else None
            if matrix is not None and item.get("name"):
                entries.append(TransformEntry(str(item["name"]), inverse_matrix(matrix, f"{record} {item['name']}")))
        return cls(entries, str(record)) if entries else None


def _alignment_entries(path: Path) -> list[TransformEntry]:
    entries = []
    for i, face in enumerate(load_alignment(path)["faces"]):
        if not isinstance(face, dict) or "aligned" not in face or "inverse_transform" not in face:
            raise SgtoolError(f"{path}: face {i} lacks 'aligned' or 'inverse_transform'; write it again with "
                              "`sgtool align`")
        entries.append(TransformEntry(Path(str(face["aligned"])).name,
                                      inverse_matrix(face["inverse_transform"], f"{path} face {i}"),
                                      Path(str(face["crop"])).name if face.get("crop") else None,
                                      str(face["aligned"]),
                                      str(face["source"]) if face.get("face") == 0 and face.get("source") else None))
    return entries


def load_alignment(path: str | os.PathLike) -> dict:
    """Read an alignment.json back: its face records with quads/transforms/key points as float64 arrays.

    Files written before the batch runner named their failures "failures" ({"source", "error"}); they
    come back under "failed" with "input", as the current ones.
    """
    path = Path(path)
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise SgtoolError(f"{path}: no such file (run `sgtool align` first)") from None
    except ValueError as exc:  # not JSON, not text, too large or too deep
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


def unaligned_crops(folders) -> set[Path]:
    """The unaligned crops (NAME_faceK_crop.png) that the alignment records of `sgtool align` folders list, resolved:
    not aligned faces, so not what an encoder or a projection takes as one."""
    crops: set[Path] = set()
    for folder in map(Path, folders):
        for record in sorted(folder.glob("alignment*.json")):
            try:
                faces = load_alignment(record)["faces"]
            except SgtoolError:
                continue  # not an alignment record after all
            crops |= {(folder / Path(str(face["crop"])).name).resolve() for face in faces
                      if isinstance(face, dict) and face.get("crop")}
    return crops
