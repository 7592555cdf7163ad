"""Images in and out of the networks: files to RGB arrays, and RGB arrays to the tensors each network expects."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from ...errors import SgtoolError

ENCODER_SIZE = 256  # ReStyle / pSp / e4e inputs


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB: EXIF orientation applied, alpha over white, 16-bit/float scaled."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb8(img)
    except FileNotFoundError:
        raise SgtoolError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SgtoolError(f"{path} is a directory, not an image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, UnidentifiedImageError):
            reason = "not an image PIL can decode"
        raise SgtoolError(f"cannot read {path} ({reason}); pass a readable JPEG, PNG, WebP, TIFF or BMP file") from None


def _to_rgb8(img: Image.Image) -> np.ndarray:
    if img.mode == "RGB":
        return np.asarray(img).copy()
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB")).copy()
    if img.mode.startswith("I") or img.mode == "F":
        values = np.asarray(img).astype(np.float64)
        if img.mode == "F" and values.size and np.nanmax(values) <= 1.0:
            values = values * 255.0
        elif img.mode.startswith("I;16") or (values.size and values.max() > 255):
            values = values / 257.0  # 16-bit range
        grey = np.clip(np.rint(np.nan_to_num(values)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB")).copy()


def resized(rgb: np.ndarray, size: int, resample=Image.Resampling.LANCZOS) -> np.ndarray:
    """uint8 HxWx3 -> size x size (unchanged when it already is)."""
    rgb = np.asarray(rgb, dtype=np.uint8)
    if rgb.shape[:2] == (size, size):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((size, size), resample))


def generator_target(rgb: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 HxWx3 -> [3, R, R] in [-1, 1] at the generator's resolution (Lanczos, as NVIDIA's projector)."""
    x = torch.from_numpy(resized(rgb, resolution).copy()).permute(2, 0, 1).to(torch.float32)
    return x / 127.5 - 1


def encoder_input(rgb: np.ndarray, size: int = ENCODER_SIZE) -> torch.Tensor:
    """uint8 HxWx3 -> [3, size, size] in [-1, 1], as ReStyle's inference transform (PIL bilinear resize,
    ToTensor, Normalize(0.5, 0.5))."""
    image = resized(rgb, size, Image.Resampling.BILINEAR)
    x = torch.from_numpy(image.copy()).permute(2, 0, 1).to(torch.float32) / 255
    return (x - 0.5) / 0.5


def load_square_target(path, resolution: int) -> torch.Tensor:
    """A square photo (an aligned image or an unaligned crop) as a generator target [3, R, R]."""
    rgb = read_image(path)
    if rgb.shape[0] != rgb.shape[1]:
        raise SgtoolError(f"{path} is {rgb.shape[1]}x{rgb.shape[0]}, not square; give the aligned image or the "
                          "unaligned crop that `sgtool align` writes")
    return generator_target(rgb, resolution)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def labelled_grid(rows: Sequence[Sequence[np.ndarray]], labels: Sequence[str]) -> np.ndarray:
    """Tile uint8 HWC images (rows x columns) under a header band with one label per column."""
    height, width = rows[0][0].shape[:2]
    font_size = max(10, width // 14)
    header = font_size + 8
    canvas = Image.new("RGB", (width * len(labels), header + height * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font(font_size)
    for col, label in enumerate(labels):
        text = label
        while len(text) > 1 and draw.textlength(text, font=font) > width - 4:
            text = text[:-1]
        offset = (width - draw.textlength(text, font=font)) / 2
        draw.text((col * width + offset, 4), text, fill=(0, 0, 0), font=font)
    for r, row in enumerate(rows):
        for col, image in enumerate(row):
            canvas.paste(Image.fromarray(image), (col * width, header + r * height))
    return np.asarray(canvas)
