"""Training data for encoders: a folder of aligned images or the generator's own renders.

Both are indexed datasets read through one sampler, `GlobalBatchSampler`: step s of an epoch uses
the same global batch for every process count and gradient accumulation, so a run on N processes
matches a single process and a resumed run continues on the very next batch.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, DistributedSampler

from ...errors import SgtoolError
from ..shared.render import synthesize
from ..translate.inputs import bicubic_downsample

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
RETRIES = 10  # neighbours tried in place of a file that fails to decode during training


MAX_PIXELS = 4096 * 4096  # the largest aligned crop `sgtool align --size` writes


@dataclass
class ImageScan:
    files: list[Path]
    unreadable: list[Path]


def scan_folder(folder: Path, min_size: int, what: str = "--data") -> ImageScan:
    """Every image under `folder` (recursively; `sgtool align`'s _crop.png files left out), headers checked.

    Unreadable files are counted and skipped; a folder with none left, or images that are not square
    or smaller than the encoder input, stop the run before it starts.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SgtoolError(f"{what} {folder} is not a folder; pass a folder of aligned images (sgtool align output)")
    candidates = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                        and not p.stem.endswith("_crop"))
    files, unreadable = [], []
    for path in candidates:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except Image.DecompressionBombError as exc:
            raise SgtoolError(f"{path} claims more pixels than an image can decode safely ({exc}); remove it from "
                              f"{what}") from None
        except (UnidentifiedImageError, OSError):
            unreadable.append(path)
            continue
        if width * height > MAX_PIXELS:
            raise SgtoolError(f"{path} is {width}x{height}, more than {MAX_PIXELS // 1_000_000} megapixels; aligned "
                              f"crops are at most 4096 px: remove it from {what} or resize it")
        if width != height:
            raise SgtoolError(f"{path} is {width}x{height}; encoders train on square aligned crops: run "
                              f"`sgtool align` on the photos and pass its output folder as {what}")
        if width < min_size:
            raise SgtoolError(f"{path} is {width}x{height}, smaller than the encoder input ({min_size}); use larger "
                              f"crops (sgtool align --size {min_size}) or a smaller --input-size")
        files.append(path)
    if not files:
        detail = f" ({len(unreadable)} unreadable)" if unreadable else ""
        raise SgtoolError(f"{what} {folder} holds no readable images{detail}; pass a folder of aligned .png/.jpg "
                          "crops, or --synthetic")
    return ImageScan(files, unreadable)


def split_files(files: list[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """A seeded train/test split (at least one image on each side)."""
    if len(files) < 2:
        raise SgtoolError(f"{files[0].parent}: one image cannot be split into training and held-out sets; add "
                          "images or pass --test-data")
    order = np.random.RandomState(seed).permutation(len(files))
    count = min(len(files) - 1, max(1, int(round(len(files) * fraction))))
    test = sorted(files[i] for i in order[:count])
    held = set(test)
    return [f for f in files if f not in held], test


def draw_flip(seed: int, epoch: int, index: int) -> bool:
    return zlib.crc32(f"{seed}:{epoch}:{index}".encode()) & 1 == 1


def to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """RGB [3, size, size] in [-1, 1], resized bilinearly as the references' transforms."""
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


class FolderImages(Dataset):
    """Aligned images decoded in DataLoader workers; (image, number of files that failed before it)."""

    def __init__(self, files: list[Path], size: int, flip: bool = False, seed: int = 0):
        self.files, self.size, self.flip, self.seed = list(files), size, flip, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        failed = 0
        for attempt in range(RETRIES):
            path = self.files[(index + attempt) % len(self.files)]
            try:
                with Image.open(path) as image:
                    tensor = to_tensor(image, self.size)
                break
            except (UnidentifiedImageError, OSError):
                failed += 1
        else:
            raise SgtoolError(f"{RETRIES} images in a row failed to decode near {self.files[index]}; check the files")
        if self.flip and draw_flip(self.seed, self.epoch, index):
            tensor = tensor.flip(-1)
        return {"image": tensor, "index": index, "failed": failed}


class SyntheticLatents(Dataset):
    """Indices of rendered training images: the image is drawn by the trainer (on its device) from
    `synthetic_z(seed, index)`, so every process and every resumption sees the same latent for an index."""

    def __init__(self, count: int, offset: int = 0):
        self.count, self.offset = count, offset

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        return {"index": index + self.offset, "failed": 0}


def synthetic_z(seed: int, index: int, z_dim: int) -> torch.Tensor:
    """The z of synthetic image `index`: its own numpy stream for every (seed, index) pair.

    torch's CPU generator keeps only a seed's low 32 bits, so indices offset by 2**40 (the held-out
    images) drew the same latents as the first training images.
    """
    return torch.from_numpy(np.random.default_rng([seed, index]).standard_normal(z_dim, dtype=np.float32))


@torch.no_grad()
def render_targets(generator, indices: torch.Tensor, seed: int, truncation: float, size: int, device):
    """(images [B, 3, size, size], their W+ latents) for synthetic indices, clamped to [-1, 1] like any image
    file: an encoder trained on them meets photos, and pixels beyond the range are no picture's content."""
    z = torch.stack([synthetic_z(seed, int(i), generator.z_dim) for i in indices]).to(device)
    ws = generator.mapping(z, None, truncation_psi=truncation)
    images = synthesize(generator, ws).clamp(-1, 1)
    return torch.nn.functional.adaptive_avg_pool2d(images, (size, size)), ws


class GlobalBatchSampler(DistributedSampler):
    """DistributedSampler whose step s covers the same global batch whatever the process count.

    Each epoch's permutation (seeded by seed + epoch) is cut into global batches of `global_batch`;
    global batch s is split into `accum` micro-batches x `world` ranks, and this rank reads its
    part of each in order. `start_step` skips the steps a resumed run already took this epoch.
    """

    def __init__(self, dataset, global_batch: int, accum: int, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        if global_batch % (accum * num_replicas):
            raise SgtoolError(f"--batch-size {global_batch} must be a multiple of --grad-accum x processes "
                              f"({accum} x {num_replicas})")
        self.global_batch, self.accum = global_batch, accum
        self.micro = global_batch // (accum * num_replicas)
        self.steps_per_epoch = len(dataset) // global_batch
        if self.steps_per_epoch < 1:
            raise SgtoolError(f"{len(dataset)} training images are fewer than one batch ({global_batch}); lower "
                              "--batch-size or add images")
        self.start_step = 0

    def __iter__(self):
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        for step in range(self.start_step, self.steps_per_epoch):
            batch = order[step * self.global_batch:(step + 1) * self.global_batch]
            for micro in range(self.accum):
                start = (micro * self.num_replicas + self.rank) * self.micro
                yield from batch[start:start + self.micro].tolist()

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accum * self.micro



def draw_factor(factors: list[int], seed: int, index: int, epoch: int) -> int:
    """The super-resolution factor of image `index` in `epoch`: drawn from its own stream, so every process count
    and every resumption degrades an image the same way."""
    return factors[zlib.crc32(f"{seed}:{epoch}:{index}:factor".encode()) % len(factors)]


def degrade_batch(images: torch.Tensor, factors: list[int]) -> torch.Tensor:
    """pSp's super-resolution input for each target [-1, 1]: its bicubic downsampling by the image's factor,
    truncated to 8 bits, upsampled back bilinearly (what `sgtool translate --factor` feeds the encoder)."""
    size = images.shape[-2:]
    out = []
    for image, factor in zip((images + 1) / 2, factors):
        low = bicubic_downsample(image[None].float(), int(factor)).clamp(0, 1)
        low = torch.floor(low * 255) / 255
        out.append(torch.nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False))
    return torch.cat(out) * 2 - 1
