"""Input files -> the tensors a pSp task encoder reads, made as pSp's `transform_inference` makes them.

Every input is first resized to 256x256 with PIL's bilinear filter (8-bit fixed point: a float resampler would
not give the same values). Then, by task:
- sketch: one grayscale channel in [0, 1] (u8 / 255, not normalised);
- segmentation: the resized class-id image (bilinear on the ids, as pSp does) one-hot, int64, channel = class id;
- super-resolution: pSp's degradation (`BilinearResize`, which is bicubic: a = -0.5, 4f taps, reflect padding,
  stride f, then truncated to 8 bits), upsampled back to 256 with PIL bilinear, then (x - 0.5) / 0.5;
- photo (frontalisation, toonify, encoding): (x - 0.5) / 0.5.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.nn import functional as F

from ...errors import SgtoolError
from ...models.encoders.psp_tasks import PspTask
from ..shared.images import ENCODER_SIZE, read_image

# CelebAMask-HQ's 19 face-parsing classes in the colours pSp draws label maps with (class id = index).
CELEBAMASK_PALETTE = ((0, 0, 0), (204, 0, 0), (76, 153, 0), (204, 204, 0), (51, 51, 255), (204, 0, 204),
                      (0, 255, 255), (255, 204, 204), (102, 51, 0), (255, 0, 0), (102, 204, 0), (255, 255, 0),
                      (0, 0, 153), (0, 0, 204), (255, 51, 153), (0, 204, 204), (0, 51, 0), (255, 153, 51),
                      (0, 204, 0))
MAX_FACTOR = 64  # reflect padding of 3f must stay inside the 256 px image
# A colour map's pixel belongs to the nearest palette colour when within this RGB distance (antialiased borders
# stay close); a file where more than UNMATCHED_SHARE of the pixels are farther does not use the palette.
PALETTE_DISTANCE = 48.0
UNMATCHED_SHARE = 0.05
# A 'colour' image: more than this share of its pixels have channels differing by more than COLOUR_SPREAD levels.
COLOUR_SPREAD = 16
COLOUR_SHARE = 0.01


@dataclass
class Prepared:
    """One input as the encoder reads it, with what the side-by-side and the record show."""

    x: torch.Tensor  # [input_nc, 256, 256]; float32, or int64 for a one-hot label map
    preview: np.ndarray  # uint8 256x256x3: the input as the model sees it
    labels: np.ndarray | None = None  # segmentation: the resized class ids (256x256 uint8)
    lowres: np.ndarray | None = None  # super-resolution: the degraded image (256/f x 256/f x 3 uint8)
    factor: int | None = None


# --------------------------------------------------------------------------------------------------
# pSp's super-resolution degradation


def bicubic_taps(factor: int) -> torch.Tensor:
    """The 4f-tap normalised bicubic (a = -0.5) kernel of pSp's BicubicDownSample, in float32 as it computes it."""
    size = 4 * factor
    t = ((torch.arange(size, dtype=torch.float32) - float(size // 2) + 0.5) / factor).abs()
    a = -0.5
    near = (a + 2.0) * torch.pow(t, 3.0) - (a + 3.0) * torch.pow(t, 2.0) + 1
    far = a * torch.pow(t, 3.0) - 5.0 * a * torch.pow(t, 2.0) + 8.0 * a * t - 4.0 * a
    taps = torch.where(t <= 1.0, near, torch.where(t < 2.0, far, torch.zeros_like(t)))
    return taps / torch.sum(taps)


def bicubic_downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """[B, C, H, W] float -> [B, C, H/f, W/f]: separable (rows, then columns), reflect-padded, stride f."""
    taps = bicubic_taps(factor)
    channels = x.shape[1]
    pad = 3 * factor  # 4f taps, stride f
    rows = taps.reshape(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    cols = taps.reshape(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    x = F.conv2d(F.pad(x, (0, 0, pad // 2, pad - pad // 2), mode="reflect"), rows, stride=(factor, 1),
                 groups=channels)
    return F.conv2d(F.pad(x, (pad // 2, pad - pad // 2, 0, 0), mode="reflect"), cols, stride=(1, factor),
                    groups=channels)


def degrade(rgb: np.ndarray, factor: int) -> np.ndarray:
    """uint8 HxWx3 -> the low-resolution uint8 image pSp's `BilinearResize([factor])` makes (values truncated,
    as ToPILImage does)."""
    check_factor(factor, min(rgb.shape[:2]))
    x = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)[None].to(torch.float32) / 255
    low = bicubic_downsample(x, int(factor))[0].clamp(0, 1)
    return (low * 255).to(torch.uint8).permute(1, 2, 0).numpy()


def check_factor(factor: int, side: int = ENCODER_SIZE) -> None:
    """The reflect padding (3f/2 a side) must stay inside the image."""
    if not 1 <= int(factor) <= MAX_FACTOR or 3 * int(factor) // 2 >= side:
        raise SgtoolError(f"--factor must be between 1 and {min(MAX_FACTOR, (2 * side - 1) // 3)} for {side} px "
                          f"inputs, got {factor}")


# --------------------------------------------------------------------------------------------------
# Reading input files per task


def read_palette(spec: str | Path) -> np.ndarray:
    """'celebamask' (pSp's colours) or a file: a JSON list of [r, g, b] or one 'r g b' / '#rrggbb' per line."""
    if str(spec).lower() == "celebamask":
        return np.array(CELEBAMASK_PALETTE, dtype=np.int64)
    path = Path(spec)
    try:
        text = path.read_text()
    except OSError:
        raise SgtoolError(f"--palette {spec}: no such file; give 'celebamask' or a file of RGB colours") from None
    try:
        colours = json.loads(text)
    except ValueError:
        colours = [_colour(line) for line in text.splitlines() if line.strip() and not line.startswith("#!")]
    array = np.asarray(colours, dtype=np.int64) if colours else np.zeros((0, 3), np.int64)
    if array.ndim != 2 or array.shape[1] != 3 or len(array) == 0 or array.min() < 0 or array.max() > 255:
        raise SgtoolError(f"--palette {path}: expected one RGB colour (0-255) per class, class id = position")
    return array


def _colour(line: str) -> list[int]:
    line = line.strip()
    if line.startswith("#") and len(line) == 7:
        return [int(line[i:i + 2], 16) for i in (1, 3, 5)]
    return [int(v) for v in line.replace(",", " ").split()]


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except FileNotFoundError:
        raise SgtoolError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = "not an image PIL can decode" if isinstance(exc, UnidentifiedImageError) else str(exc).split("\n")[0]
        raise SgtoolError(f"cannot read {path} ({reason}); pass a PNG or JPEG file") from None


def _is_colour(img: Image.Image) -> bool:
    if img.mode in ("1", "L", "LA", "I", "I;16", "F"):
        return False
    rgb = np.asarray(img.convert("RGB")).astype(np.int16)
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    return float((spread > COLOUR_SPREAD).mean()) > COLOUR_SHARE


def read_label_image(path: Path, task: PspTask, palette: np.ndarray | None = None) -> Image.Image:
    """A sketch or class-id map as the 8-bit 'L' image pSp opens (`convert('L')`), checked against the task."""
    img = _open(path)
    if task.kind == "sketch":
        if _is_colour(img):
            raise SgtoolError(f"{path} is a colour image, but this model ({task_source(task)}) reads 1-channel "
                              "grayscale sketches; give the sketch (dark lines on white), not a photo")
        return img.convert("L")
    if palette is not None:
        ids = _ids_from_colours(path, np.asarray(img.convert("RGB")), palette)
    elif img.mode == "P":
        ids = np.asarray(img)  # a palette PNG's indices are its class ids (its luminance would not be)
    elif _is_colour(img):
        raise SgtoolError(f"{path} is a colour image, but this model reads a {task.label_nc}-class id map (one "
                          f"8-bit channel, values 0-{task.label_nc - 1}); give the face-parsing PNG, or --palette "
                          "celebamask (or a palette file) for a colour-coded map")
    elif img.mode in ("I", "I;16", "F"):
        ids = np.asarray(img)
    else:
        ids = np.asarray(img.convert("L"))
    top = int(ids.max()) if ids.size else 0
    if int(ids.min()) < 0 or top >= task.label_nc:
        raise SgtoolError(f"{path} holds class id {top}, but the model knows {task.label_nc} classes (0-"
                          f"{task.label_nc - 1}); give a face-parsing map with CelebAMask-HQ's class ids")
    return Image.fromarray(ids.astype(np.uint8), mode="L")


def task_source(task: PspTask) -> str:
    return task.dataset_type or f"{task.kind} model"


def _ids_from_colours(path: Path, rgb: np.ndarray, palette: np.ndarray) -> np.ndarray:
    flat = rgb.reshape(-1, 1, 3).astype(np.int64)
    distance = np.sqrt(((flat - palette[None]) ** 2).sum(axis=2))  # pixels x classes
    nearest = distance.argmin(axis=1)
    unmatched = float((distance.min(axis=1) > PALETTE_DISTANCE).mean())
    if unmatched > UNMATCHED_SHARE:
        raise SgtoolError(f"{path}: {unmatched:.0%} of its pixels match no colour of the palette; give the palette "
                          "the map was drawn with (--palette FILE) or the class-id PNG")
    return nearest.reshape(rgb.shape[:2]).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Files -> encoder inputs


def resize_256(img: Image.Image, side: int = ENCODER_SIZE) -> Image.Image:
    """torchvision's Resize((256, 256)) on a PIL image: PIL bilinear (a no-op at 256x256). `side`: the input size
    of a smaller sgtool-trained encoder."""
    size = (side, side)
    return img if img.size == size else img.resize(size, Image.Resampling.BILINEAR)


def normalised(rgb: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> [3, H, W]: ToTensor then Normalize(0.5, 0.5)."""
    x = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).to(torch.float32) / 255
    return (x - 0.5) / 0.5


def one_hot(labels: np.ndarray, classes: int) -> torch.Tensor:
    """HxW class ids -> [classes, H, W] int64, channel = class id."""
    ids = torch.from_numpy(labels.astype(np.int64))
    return F.one_hot(ids, classes).permute(2, 0, 1).contiguous()


def label_preview(labels: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    colours = palette if palette is not None and len(palette) > int(labels.max()) else np.array(CELEBAMASK_PALETTE)
    if int(labels.max()) >= len(colours):  # more classes than colours: a gray ramp
        return np.repeat((labels.astype(np.float32) * 255 / max(1, labels.max())).astype(np.uint8)[..., None], 3, 2)
    return colours[labels].astype(np.uint8)


def prepare_input(path: Path, task: PspTask, factor: int | None = None,
                  palette: np.ndarray | None = None) -> Prepared:
    """One input file as the task's encoder reads it."""
    if task.kind in ("sketch", "segmentation"):
        image = resize_256(read_label_image(path, task, palette), task.input_size)
        values = np.asarray(image)
        if task.kind == "sketch":
            x = torch.from_numpy(values.copy())[None].to(torch.float32) / 255
            return Prepared(x, np.repeat(values[..., None], 3, axis=2))
        return Prepared(one_hot(values, task.label_nc), label_preview(values, palette), labels=values.copy())
    rgb = np.asarray(resize_256(Image.fromarray(read_image(path)), task.input_size))
    if task.kind == "super-resolution":
        if factor is None:
            raise SgtoolError(f"{task_source(task)} was trained on factors {','.join(map(str, task.factors))}; "
                              "pass --factor F (how much the input is downsampled before it is restored)")
        lowres = degrade(rgb, factor)
        restored = np.asarray(resize_256(Image.fromarray(lowres), task.input_size))
        return Prepared(normalised(restored), restored.copy(), lowres=lowres, factor=int(factor))
    return Prepared(normalised(rgb), rgb.copy())
