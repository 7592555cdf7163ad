"""pSp's image-to-image tasks in training: what the encoder reads for each target image.

- sketch, segmentation, toonify, and frontalization given pairs: `--data PAIRS` holds `source/` and `target/`;
  a source and its target have the same path below those folders up to the extension (`source/a/0001.png` with
  `target/a/0001.jpg`). The source is read by translate's own `prepare_input` at the encoder's input size, so
  training and `sgtool translate` feed the encoder the same tensors (a sketch: one channel in [0, 1]; class ids:
  one-hot; a photo: RGB in [-1, 1]). Sketch and label pairs are never flipped (pSp's transforms do not: a
  face-parsing map's left and right classes would swap); toonify and frontalization pairs flip together.
- frontalization from a plain folder of photos: pSp's scheme, the source is the target photo flipped or not,
  drawn apart from the target's own flip (its independent RandomHorizontalFlip of source and target).
- super-resolution: the target degraded by a factor drawn per image (`data.degrade_batch`).
- inpainting: the target with rectangular holes drawn per image and epoch from the seed (MASKS), painted
  MASK_FILL; the checkpoint is a plain RGB pSp (`ffhq_encode`), so translate runs it on a photo whose holes are
  painted that gray.
"""

from __future__ import annotations

import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ...errors import SgtoolError
from ...models.encoders.psp_tasks import PspTask
from ...settings import TrainEncoderSettings
from ...settings.training import PAIRED_TASKS
from ..translate.inputs import label_preview, prepare_input, read_label_image
from .data import (IMAGE_SUFFIXES, RETRIES, FolderImages, degrade_batch, draw_factor, draw_flip, scan_folder,
                   split_files, to_tensor)

TASKS = {  # --task -> (pSp's dataset_type, what the encoder reads); pSp's inference picks its transform by the type
    "encode": ("ffhq_encode", "photo"),
    "super-resolution": ("celebs_super_resolution", "super-resolution"),
    "sketch": ("celebs_sketch_to_face", "sketch"),
    "segmentation": ("celebs_seg_to_face", "segmentation"),
    "frontalization": ("ffhq_frontalize", "photo"),
    "toonify": ("ffhq_encode", "photo"),
    "inpainting": ("ffhq_encode", "photo"),
}
PAIR_FLIPS = ("toonify", "frontalization")  # pairs flipped together (sketches and label maps never)
# Inpainting holes: 1-3 axis-aligned rectangles per image, each side a uniform share of the input side.
MASK_FILL = 128  # the holes' 8-bit gray level in every channel (0.0039 after (x / 255 - 0.5) / 0.5)
MASK_RECTANGLES = (1, 3)
MASK_SIDE = (1 / 8, 1 / 2)


def run_task(settings: TrainEncoderSettings) -> PspTask:
    """The task a run trains, as translate reads it back from the checkpoint."""
    dataset_type, kind = TASKS[settings.task]
    label_nc = {"sketch": 1, "segmentation": settings.classes}.get(settings.task, 0)
    factors = tuple(settings.factor_list) if settings.task == "super-resolution" else ()
    return PspTask(kind, dataset_type, label_nc or 3, label_nc, factors, settings.input_size)


def task_record(settings: TrainEncoderSettings) -> dict:
    """What the checkpoint says of its task beside pSp's opts: for inpainting, how its holes were drawn."""
    task = run_task(settings)
    record = {"task": settings.task, "dataset_type": task.dataset_type, "input": task.kind,
              "input_nc": task.input_nc, "label_nc": task.label_nc}
    if settings.task == "super-resolution":
        record["factors"] = list(task.factors)
    if settings.task == "inpainting":
        record["masks"] = {"rectangles": list(MASK_RECTANGLES), "side_share": list(MASK_SIDE), "fill": MASK_FILL,
                           "input": "the photo with its holes painted (fill, fill, fill)"}
    return record


# --------------------------------------------------------------------------------------------------
# Sources made from the targets on the fly


def draw_mask(seed: int, epoch: int, index: int, size: int) -> torch.Tensor:
    """Image `index`'s holes in `epoch` ([size, size] bool, True = hole), from its own stream."""
    rng = np.random.default_rng([seed, epoch, index, zlib.crc32(b"inpainting")])
    mask = np.zeros((size, size), dtype=bool)
    low, high = max(1, int(size * MASK_SIDE[0])), max(1, int(size * MASK_SIDE[1]))
    for _ in range(int(rng.integers(MASK_RECTANGLES[0], MASK_RECTANGLES[1] + 1))):
        height, width = rng.integers(low, high + 1, size=2)
        top, left = rng.integers(0, size - height + 1), rng.integers(0, size - width + 1)
        mask[top:top + height, left:left + width] = True
    return torch.from_numpy(mask)


def _source_flipped(seed: int, epoch: int, index: int) -> bool:
    return bool(np.random.default_rng([seed, epoch, index, zlib.crc32(b"frontalization")]).integers(2))


def encoder_source(settings: TrainEncoderSettings, raw: dict, target: torch.Tensor, epoch: int):
    """The encoder input of a batch whose targets are `target` [B, 3, S, S] (None: the targets themselves)."""
    if "source" in raw:
        return raw["source"].to(target.device, non_blocking=True)
    indices = [int(i) for i in raw["index"]]
    if settings.task == "super-resolution":
        return degrade_batch(target, [draw_factor(settings.factor_list, settings.seed, i, epoch) for i in indices])
    if settings.task == "inpainting":
        holes = torch.stack([draw_mask(settings.seed, epoch, i, target.shape[-1]) for i in indices])
        return torch.where(holes[:, None].to(target.device), MASK_FILL / 127.5 - 1, target)
    if settings.task == "frontalization":
        flips = torch.tensor([_source_flipped(settings.seed, epoch, i) for i in indices], device=target.device)
        return torch.where(flips[:, None, None, None], target.flip(-1), target)
    return None


def grid_inputs(settings: TrainEncoderSettings, batch, i: int) -> list[torch.Tensor]:
    """The validation grid's first tiles of row i: the source as RGB (when the task has one), the target."""
    if batch.source is None:
        return [batch.x[i]]
    source = batch.source[i].detach().cpu()
    kind = run_task(settings).kind
    if kind == "sketch":
        source = source.expand(3, -1, -1) * 2 - 1
    elif kind == "segmentation":
        colours = label_preview(source.argmax(0).numpy().astype(np.uint8))
        source = torch.from_numpy(colours).permute(2, 0, 1).float() / 127.5 - 1
    return [source.to(batch.x.device), batch.x[i]]


# --------------------------------------------------------------------------------------------------
# Paired folders


def is_paired(folder) -> bool:
    return folder is not None and (Path(folder) / "source").is_dir() and (Path(folder) / "target").is_dir()


def uses_pairs(settings: TrainEncoderSettings) -> bool:
    return settings.data is not None and (settings.task in PAIRED_TASKS
                                          or settings.task == "frontalization" and is_paired(settings.data))


def _by_name(folder: Path, files: list[Path]) -> dict[str, Path]:
    named: dict[str, Path] = {}
    for path in sorted(files):
        key = path.relative_to(folder).with_suffix("").as_posix()
        if key in named:
            raise SgtoolError(f"{named[key]} and {path} have the same name; keep one of them, a source pairs with "
                              "the target of its name")
        named[key] = path
    return named


def _readable(path: Path) -> bool:
    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, OSError):
        return False


def _check_source(path: Path, task: PspTask) -> None:
    try:
        read_label_image(path, task)
    except SgtoolError as exc:
        if task.kind != "segmentation" or "class id" not in str(exc):
            raise
        raise SgtoolError(f"{exc}, or train on more classes (--classes)") from None


@dataclass
class PairScan:
    pairs: list[tuple[Path, Path]]  # (source, target)
    unreadable: int


def scan_pairs(folder, task: PspTask, what: str = "--data", workers: int = 4) -> PairScan:
    """The (source, target) files of a PAIRS folder, matched by name; every source's content checked against the
    task (a colour sketch, class ids outside the classes) before the run starts."""
    folder = Path(folder)
    if not is_paired(folder):
        raise SgtoolError(f"{what} {folder} holds no source/ and target/ folders; pair each input (sketch, label "
                          "map, photo) in PAIRS/source with its target photo of the same name in PAIRS/target")
    target_scan = scan_folder(folder / "target", task.input_size, what=f"{what} targets")
    targets = _by_name(folder / "target", target_scan.files + target_scan.unreadable)
    source_files = [p for p in (folder / "source").rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                    and not p.stem.endswith("_crop")]
    sources = _by_name(folder / "source", source_files)
    lone_sources, lone_targets = sorted(set(sources) - set(targets)), sorted(set(targets) - set(sources))
    if lone_sources or lone_targets:
        first, other = ((sources[lone_sources[0]], "target") if lone_sources
                        else (targets[lone_targets[0]], "source"))
        raise SgtoolError(f"{first} has no file of the same name in {folder / other} ({len(lone_sources)} sources "
                          f"and {len(lone_targets)} targets unmatched); give every source a target named alike "
                          "(extensions may differ)")
    bad_targets = set(target_scan.unreadable)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        readable = dict(zip(sources, pool.map(_readable, sources.values())))
        pairs = [(sources[k], targets[k]) for k in sorted(sources) if readable[k] and targets[k] not in bad_targets]
        if task.kind in ("sketch", "segmentation"):  # decodes every source: a bad one stops the run here, named
            list(pool.map(lambda pair: _check_source(pair[0], task), pairs))
    if not pairs:
        raise SgtoolError(f"{what} {folder} holds no pair with both files readable; check the images")
    return PairScan(pairs, len(sources) - len(pairs))


class PairedImages(FolderImages):
    """(target [3, S, S] in [-1, 1], source as translate prepares it) pairs decoded in DataLoader workers."""

    def __init__(self, pairs: list[tuple[Path, Path]], task: PspTask, flip: bool = False, seed: int = 0):
        super().__init__(pairs, task.input_size, flip=flip, seed=seed)
        self.task = task

    def __getitem__(self, index: int):
        failed = 0
        for attempt in range(RETRIES):
            source_path, target_path = self.files[(index + attempt) % len(self.files)]
            try:
                with Image.open(target_path) as image:
                    target = to_tensor(image, self.size)
                source = prepare_input(source_path, self.task).x.to(torch.float32)
                break
            except (UnidentifiedImageError, OSError, SgtoolError):
                failed += 1
        else:
            raise SgtoolError(f"{RETRIES} pairs in a row failed to decode near {self.files[index][1]}; check the files")
        if self.flip and draw_flip(self.seed, self.epoch, index):
            target, source = target.flip(-1), source.flip(-1)
        return {"image": target, "source": source, "index": index, "failed": failed}


def paired_datasets(settings: TrainEncoderSettings) -> tuple[PairedImages, PairedImages, dict]:
    """Training and held-out pairs (`--test-data PAIRS`, or a seeded `test_fraction` of --data)."""
    s, task = settings, run_task(settings)
    scan = scan_pairs(s.data, task, workers=s.workers)
    if s.test_data is not None:
        held = scan_pairs(s.test_data, task, what="--test-data", workers=s.workers)
        train, test, unreadable = scan.pairs, held.pairs, scan.unreadable + held.unreadable
    else:
        if len(scan.pairs) < 2:
            raise SgtoolError(f"--data {s.data}: one pair cannot be split into training and held-out sets; add pairs "
                              "or pass --test-data")
        train, test = split_files(scan.pairs, s.test_fraction, s.seed)
        unreadable = scan.unreadable
    test = test[:s.test_images]
    counts = {"train": len(train), "test": len(test), "unreadable": unreadable}
    return (PairedImages(train, task, flip=s.flip and s.task in PAIR_FLIPS, seed=s.seed), PairedImages(test, task),
            counts)
