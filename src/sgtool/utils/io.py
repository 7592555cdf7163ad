"""File output helpers: atomic writes, images in NVIDIA's uint8 convention, JSON records."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from ..errors import SgtoolError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds.

    A crash or Ctrl-C never leaves a half-written output under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp creates 0600 files; give outputs the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_writable(path: str | os.PathLike, kind: str = "dir", what: str = "--outdir") -> Path:
    """Fail before any work when `path` cannot receive the output (`kind` dir or file); writes nothing that stays.

    A folder must not be an existing file; a file must not be an existing folder; the first existing
    folder above must be writable (probed with a temporary file, so read-only mounts and /proc count).
    """
    path = Path(path).expanduser()
    if path.is_symlink() and not path.exists():
        raise SgtoolError(f"{what} {path} is a link to {os.readlink(path)}, which does not exist (or links back to "
                          "itself); give a folder, or fix or remove the link")
    if kind == "dir" and path.exists() and not path.is_dir():
        raise SgtoolError(f"{what} {path} is a file; give a folder (it is created if missing)")
    if kind == "file" and path.is_dir():
        raise SgtoolError(f"{what} {path} is a folder; give a file name")
    ancestor = path if kind == "dir" and path.is_dir() else path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise SgtoolError(f"{what} {path} cannot be created: {ancestor} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".sgtool-write-check.", dir=ancestor)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise SgtoolError(f"{what} {path} cannot be written ({exc.strerror or exc} in {ancestor}); choose a "
                          "folder you can write to") from None
    return path


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Generator output in [-1, 1] (NCHW or CHW) -> uint8 HWC (or NHWC), as NVIDIA's gen_images does."""
    images = images.detach().to(torch.float32).cpu()
    converted = (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return converted.permute(0, 2, 3, 1).numpy() if converted.ndim == 4 else converted.permute(1, 2, 0).numpy()


def save_image(image: np.ndarray | torch.Tensor, path: str | os.PathLike, quality: int | None = None) -> Path:
    """Write an RGB (or greyscale) image atomically; tensors are converted with `to_uint8`. `quality`: of JPEG and
    WebP files."""
    if isinstance(image, torch.Tensor):
        image = to_uint8(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    image_format = _image_format(path)
    options = {"quality": quality} if quality is not None and image_format in ("JPEG", "WEBP") else {}
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format=image_format, **options)
    return Path(path)


def _image_format(path) -> str:
    suffix = Path(path).suffix.lower()
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(suffix, "PNG")


def save_npy(array: np.ndarray, path: str | os.PathLike, allow_pickle: bool = False) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=allow_pickle)
    return Path(path)


def write_json(data, path: str | os.PathLike) -> Path:
    """Valid JSON whatever the values: NaN and infinity (a diverged loss) are written as null."""
    text = json.dumps(json.loads(json.dumps(data, default=_json_default), parse_constant=lambda _: None), indent=2,
                      allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")
    return Path(path)


def _json_default(value):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def image_grid(images: np.ndarray, cols: int) -> np.ndarray:
    """Tile NHWC uint8 images into one image, `cols` per row (blank cells at the end)."""
    n, h, w, c = images.shape
    rows = -(-n // cols)
    grid = np.zeros((rows * h, cols * w, c), dtype=images.dtype)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        grid[r * h:(r + 1) * h, k * w:(k + 1) * w] = img
    return grid


def digest(data) -> str:
    """A short key of JSON-able data (cache keys)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_identity(path) -> dict:
    """What says a file is still the one a cached result came from."""
    path = Path(path)
    stat = path.stat()
    return {"path": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
