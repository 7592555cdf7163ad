"""`sgtool video` as a library: invert, (tune,) edit and re-assemble a real video, stable over time.

Stages, each caching its results in the output directory (a stage whose inputs and settings are
unchanged is skipped; an interrupted stage resumes where it stopped; `force` recomputes):

1. track   decode the clip (streamed) and find the main face in every frame (mesh landmarks, IoU/centre
           tracking, `face_index` picks the face, largest first)       -> cache/track/*.npy
2. align   fill frames without a face from their neighbours, smooth the face quads over time (zero-phase),
           write FFHQ-aligned and unaligned crops (second decode pass) -> frames/, alignment.json
3. invert  ReStyle-invert every aligned crop (batched)                  -> cache/invert/, latents.npy
           then smooth the latents over time (zero-phase, every frame kept), optional fine-layer freeze
4. tune    optional joint PTI over sampled frames                      -> tune/tuned_generator.safetensors
5. render  edit (with an optional fade-in), render the unaligned crops with the smoothed transforms,
           optionally stitch-tune per frame, paste into the original frames (third decode pass) and
           encode output.mp4 (+ the source's audio) and the other videos.

Only a batch of frames is held at full resolution at any time; per-frame records, crops and latents
live on disk (latents memory-mapped).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch
from PIL import Image

from ..errors import SgtoolError
from ..utils.io import save_image, write_json
from .align import (
    RECIPES,
    crop_from_quad,
    crop_quad_from,
    key_points,
    quad_from_landmarks,
    quad_side,
    transform_between,
    transform_parameters,
)
from .faces import box_iou
from .paste import MaskSettings, SelfieSegmenter, crop_to_source_matrix, head_mask, paste
from .smoothing import Smoothing, jitter, smooth, smooth_into
from .video_io import VideoInfo, VideoWriter, decode_frames, mux_audio, probe

OUTPUTS = ("output", "input_crops", "recon", "edited", "side_by_side")
MESH_POINTS = 478
CACHE_VERSION = 1
PARTIAL_SAVE_SECONDS = 30.0  # how often an interrupted tracking pass can lose work


# ---------------------------------------------------------------------------------------------------------
# Settings and progress


@dataclass
class VideoSettings:
    start: float = 0.0
    end: float | None = None
    max_frames: int | None = None
    fps: float | None = None  # resample the clip to this rate (None: keep the source's)
    face_index: int = 0
    min_face_size: float = 48.0
    recipe: str = "ffhq"
    size: int | None = None  # crop side in pixels (None: the generator's resolution)
    supersample: int = 2
    landmark_smoothing: Smoothing = field(default_factory=lambda: Smoothing(window=9))
    latent_smoothing: Smoothing = field(default_factory=lambda: Smoothing(window=5))
    freeze_fine: bool = False
    fine_layers: list[int] | None = None  # None: the second half of the style inputs
    invert_steps: int | None = None  # None: the encoder's own count
    batch_size: int = 4
    tune_frames: int = 0
    tune: dict = field(default_factory=dict)  # TuneSettings fields
    edits: list[str] = field(default_factory=list)
    directions: list[str] = field(default_factory=list)  # NAME=FILE
    edit_layers: list[int] | None = None
    edit_ramp: float = 0.0  # seconds over which the edit fades in
    stitch_steps: int = 0
    stitch_lr: float = 3e-4
    mask: MaskSettings = field(default_factory=MaskSettings)
    outputs: list[str] = field(default_factory=lambda: list(OUTPUTS))
    crf: int = 18
    preset: str = "medium"
    force: bool = False
    device: str = "cpu"

    def __post_init__(self):
        if self.start < 0:
            raise SgtoolError(f"--start must be >= 0 seconds, got {self.start}")
        if self.end is not None and self.end <= self.start:
            raise SgtoolError(f"--end ({self.end}) must be after --start ({self.start})")
        if self.max_frames is not None and self.max_frames < 1:
            raise SgtoolError(f"--max-frames must be at least 1, got {self.max_frames}")
        if self.fps is not None and self.fps <= 0:
            raise SgtoolError(f"--fps must be positive, got {self.fps}")
        if self.face_index < 0:
            raise SgtoolError(f"--face-index must be >= 0, got {self.face_index}")
        if self.recipe not in RECIPES:
            raise SgtoolError(f"--recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        if self.size is not None and self.size < 16:
            raise SgtoolError(f"--size must be at least 16 pixels, got {self.size}")
        if self.batch_size < 1 or self.supersample < 1:
            raise SgtoolError("batch_size and supersample must be at least 1")
        if self.tune_frames < 0 or self.stitch_steps < 0 or self.edit_ramp < 0:
            raise SgtoolError("--tune, --stitch-tune and --edit-ramp must not be negative")
        bad = [o for o in self.outputs if o not in OUTPUTS]
        if bad:
            raise SgtoolError(f"--outputs: unknown {', '.join(bad)}; choose from {', '.join(OUTPUTS)}")
        if not self.outputs:
            raise SgtoolError(f"--outputs selects nothing; choose from {', '.join(OUTPUTS)}")


class Reporter:
    """Progress hooks (the CLI shows rich progress bars); the default does nothing."""

    def start(self, stage: str, total: int | None) -> None:
        pass

    def advance(self, count: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass

    def note(self, text: str) -> None:
        pass


def _digest(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_identity(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class StageCache:
    """`cache/<stage>.json` = {"key", "complete", ...}: a stage is skipped when its key matches and it completed."""

    def __init__(self, outdir: Path, force: bool):
        self.dir = outdir / "cache"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.force = force

    def record(self, stage: str) -> dict | None:
        path = self.dir / f"{stage}.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def done(self, stage: str, key: str) -> bool:
        record = None if self.force else self.record(stage)
        return bool(record and record.get("key") == key and record.get("complete"))

    def resumable(self, stage: str, key: str) -> bool:
        """An unfinished run of the same stage with the same key (its partial results can be kept)."""
        record = None if self.force else self.record(stage)
        return bool(record and record.get("key") == key and not record.get("complete"))

    def begin(self, stage: str, key: str, **extra) -> None:
        if not self.resumable(stage, key):
            write_json({"key": key, "complete": False, **extra}, self.dir / f"{stage}.json")

    def finish(self, stage: str, key: str, **extra) -> None:
        write_json({"key": key, "complete": True, **extra}, self.dir / f"{stage}.json")


# ---------------------------------------------------------------------------------------------------------
# Quads as 4 parameters (centre, half x-edge): squares stay squares under linear smoothing


def quad_params(quad: np.ndarray) -> np.ndarray:
    quad = np.asarray(quad, dtype=np.float64)
    return np.concatenate([quad.mean(axis=0), (quad[3] - quad[0]) / 2])


def quad_from_params(params: np.ndarray) -> np.ndarray:
    centre, x = np.asarray(params[:2], np.float64), np.asarray(params[2:4], np.float64)
    y = np.array([-x[1], x[0]])
    return np.stack([centre - x - y, centre - x + y, centre + x + y, centre + x - y])


def quad_local(quad: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Source pixels -> the quad's own [-0.5, 0.5]^2 coordinates."""
    quad = np.asarray(quad, dtype=np.float64)
    axes = np.stack([quad[3] - quad[0], quad[1] - quad[0]], axis=1)
    return (np.asarray(points, np.float64) - quad.mean(axis=0)) @ np.linalg.inv(axes).T


def quad_global(quad: np.ndarray, local: np.ndarray) -> np.ndarray:
    quad = np.asarray(quad, dtype=np.float64)
    axes = np.stack([quad[3] - quad[0], quad[1] - quad[0]], axis=1)
    return quad.mean(axis=0) + np.asarray(local, np.float64) @ axes.T


def fill_missing(params: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Linear interpolation of per-frame parameters over frames without a face; the ends hold the nearest."""
    frames = np.arange(len(found))
    out = params.copy()
    for k in range(params.shape[1]):
        out[~found, k] = np.interp(frames[~found], frames[found], params[found, k])
    return out


def nearest_found(found: np.ndarray) -> np.ndarray:
    """For every frame, the index of the nearest frame with a face (itself when it has one)."""
    idx = np.flatnonzero(found)
    frames = np.arange(len(found))
    pos = np.clip(np.searchsorted(idx, frames), 1, len(idx) - 1) if len(idx) > 1 else np.zeros(len(found), int)
    if len(idx) == 1:
        return np.full(len(found), idx[0])
    left, right = idx[pos - 1], idx[pos]
    return np.where(frames - left <= right - frames, left, right)


# ---------------------------------------------------------------------------------------------------------
# Stage 1: tracking


def _box(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points.min(axis=0), points.max(axis=0)])


class FaceTracker:
    """Picks the main face in each frame: `face_index` (largest first) when there is no track, then the
    face that best continues the previous one (IoU, else centre distance under half the face size)."""

    def __init__(self, face_index: int, lost_after: int):
        self.face_index = face_index
        self.lost_after = max(1, lost_after)
        self.previous: np.ndarray | None = None
        self.missed = 0

    def choose(self, candidates: list[tuple[np.ndarray, object]]) -> int | None:
        if self.previous is None:
            pick = self.face_index if self.face_index < len(candidates) else None
        else:
            scores = []
            prev = self.previous
            size = max(prev[2] - prev[0], prev[3] - prev[1])
            for box, _ in candidates:
                iou = box_iou(prev, box)
                dist = np.hypot(*((box[:2] + box[2:]) / 2 - (prev[:2] + prev[2:]) / 2))
                scores.append(iou if iou > 0.2 or dist < 0.5 * size else -1.0)
            pick = int(np.argmax(scores)) if scores and max(scores) >= 0 else None
        if pick is None:
            self.missed += 1
            if self.missed > self.lost_after:
                self.previous = None  # the track is lost: pick by index again
        else:
            self.previous = candidates[pick][0]
            self.missed = 0
        return pick


def _faces_in(finder, frame: np.ndarray, min_face_size: float):
    """(box, eyes, mouth, landmarks, score) per face, largest quad first (the order `align_image` uses)."""
    out = []
    for face in finder.find(frame, min_face_size=min_face_size):
        eyes, mouth = key_points(face.landmarks)
        try:
            side = quad_side(quad_from_landmarks(eyes, mouth, "ffhq"))
        except SgtoolError:
            continue
        out.append((side, _box(face.landmarks), eyes, mouth, face.landmarks, face.score))
    out.sort(key=lambda item: -item[0])
    return [item[1:] for item in out]


# ---------------------------------------------------------------------------------------------------------
# The pipeline


@dataclass
class Track:
    found: np.ndarray  # [T] bool
    eyes: np.ndarray  # [T, 2, 2]
    mouth: np.ndarray  # [T, 2, 2]
    landmarks: np.ndarray  # [T, 478, 2] float32 (zeros where no face)
    width: int
    height: int


@dataclass
class Alignment:
    found: np.ndarray
    quad_raw: np.ndarray  # [T, 4, 2] (filled where no face)
    quad: np.ndarray  # smoothed
    crop_quad: np.ndarray
    transform: np.ndarray  # [T, 3, 3]
    inverse_transform: np.ndarray
    mask_local: np.ndarray  # [T, 478, 2] landmarks in the raw quad's coordinates (nearest found frame)


class VideoPipeline:
    """Runs the stages for one clip into `outdir`; see the module docstring."""

    def __init__(self, source, outdir, encoder: str | os.PathLike, settings: VideoSettings,
                 network: str | os.PathLike | None = None, reporter: Reporter | None = None,
                 finder=None, lpips_model=None, edit_registry=None):
        self.source = Path(source)
        self.outdir = Path(outdir)
        self.encoder_path = encoder
        self.network = network
        self.settings = settings
        self.reporter = reporter or Reporter()
        self.finder = finder
        self.lpips_model = lpips_model
        self.edit_registry = edit_registry
        self.stages: dict[str, dict] = {}
        self.info: VideoInfo = probe(self.source)
        self.fps: Fraction = Fraction(settings.fps).limit_denominator(1001) if settings.fps else self.info.fps
        self.device = torch.device(settings.device)
        self._inverter = None
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.cache = StageCache(self.outdir, settings.force)

    # -- helpers ------------------------------------------------------------------------------------------

    def frames(self) -> Iterator[np.ndarray]:
        s = self.settings
        return decode_frames(self.source, s.start, s.end, s.max_frames, self.fps if s.fps else None)

    def _stage(self, name: str, seconds: float, cached: bool, frames: int, **extra) -> None:
        rate = frames / seconds if seconds > 0 and not cached else None
        self.stages[name] = {"seconds": round(seconds, 3), "cached": cached, "frames": frames,
                             "frames_per_second": round(rate, 3) if rate else None, **extra}

    @property
    def inverter(self):
        if self._inverter is None:
            from .invert import load_encoder

            network = str(self.network) if self.network is not None else None
            self._inverter = load_encoder(self.encoder_path, device=self.device, network=network)
        return self._inverter

    @property
    def generator(self):
        return self.inverter.generator

    def crop_size(self) -> int:
        return int(self.settings.size or self.generator.img_resolution)

    # -- stage 1 ------------------------------------------------------------------------------------------

    def track_key(self) -> str:
        s = self.settings
        return _digest({"v": CACHE_VERSION, "source": _file_identity(self.source), "start": s.start, "end": s.end,
                        "max_frames": s.max_frames, "fps": s.fps, "face_index": s.face_index,
                        "min_face_size": s.min_face_size})

    def track(self) -> Track:
        key = self.track_key()
        folder = self.cache.dir / "track"
        t0 = time.perf_counter()
        if self.cache.done("track", key):
            track = self._read_track(folder)
            self._stage("track", time.perf_counter() - t0, True, len(track.found))
            return track
        partial = self.cache.resumable("track", key)
        self.cache.begin("track", key)
        folder.mkdir(parents=True, exist_ok=True)
        done: dict[str, list] = {"found": [], "eyes": [], "mouth": [], "landmarks": []}
        if partial and (folder / "partial.npz").is_file():
            with np.load(folder / "partial.npz") as data:
                done = {k: list(data[k]) for k in done}
        resumed = len(done["found"])
        if self.finder is None:
            from .faces import default_finder

            self.finder = default_finder()
        tracker = FaceTracker(self.settings.face_index, lost_after=int(round(2 * float(self.fps))))
        if resumed:
            last = int(np.flatnonzero(done["found"])[-1]) if any(done["found"]) else None
            if last is not None:
                tracker.previous = _box(np.asarray(done["landmarks"][last]))
        shape = None
        last_save = time.perf_counter()
        self.reporter.start("track faces", None)
        count = 0
        for index, frame in enumerate(self.frames()):
            shape = frame.shape
            count += 1
            if index < resumed:
                self.reporter.advance()
                continue
            candidates = _faces_in(self.finder, frame, self.settings.min_face_size)
            pick = tracker.choose([(c[0], c) for c in candidates])
            if pick is None:
                done["found"].append(False)
                done["eyes"].append(np.zeros((2, 2)))
                done["mouth"].append(np.zeros((2, 2)))
                done["landmarks"].append(np.zeros((MESH_POINTS, 2), np.float32))
            else:
                _, eyes, mouth, landmarks, _ = candidates[pick]
                done["found"].append(True)
                done["eyes"].append(eyes)
                done["mouth"].append(mouth)
                done["landmarks"].append(np.asarray(landmarks, np.float32))
            if time.perf_counter() - last_save > PARTIAL_SAVE_SECONDS:
                np.savez(folder / "partial.npz", **{k: np.asarray(v) for k, v in done.items()})
                last_save = time.perf_counter()
            self.reporter.advance()
        self.reporter.finish()
        if count == 0:
            raise SgtoolError(f"{self.source}: no frames to process in the chosen range "
                              f"(start {self.settings.start}s, end {self.settings.end}); check --start/--end")
        if count != len(done["found"]):
            raise SgtoolError(f"{self.source} decoded to {count} frames now but {len(done['found'])} before; "
                              "pass --force to start over")
        found = np.asarray(done["found"], bool)
        if not found.any():
            raise SgtoolError(f"no face found in any of the {count} frames of {self.source}; give a clip with a "
                              f"visible face (faces smaller than --min-face-size {self.settings.min_face_size:g} px "
                              "are ignored)")
        for name, value in done.items():
            np.save(folder / f"{name}.npy", np.asarray(value))
        (folder / "partial.npz").unlink(missing_ok=True)
        self.cache.finish("track", key, frames=count, width=shape[1], height=shape[0])
        track = self._read_track(folder)
        self._stage("track", time.perf_counter() - t0, False, count)
        return track

    def _read_track(self, folder: Path) -> Track:
        record = self.cache.record("track")
        return Track(found=np.load(folder / "found.npy"), eyes=np.load(folder / "eyes.npy"),
                     mouth=np.load(folder / "mouth.npy"), landmarks=np.load(folder / "landmarks.npy", mmap_mode="r"),
                     width=int(record["width"]), height=int(record["height"]))

    # -- stage 2 ------------------------------------------------------------------------------------------

    def compute_alignment(self, track: Track) -> Alignment:
        found = track.found
        frames = len(found)
        quad_raw = np.zeros((frames, 4, 2))
        params = np.zeros((frames, 4))
        for t in np.flatnonzero(found):
            quad_raw[t] = quad_from_landmarks(track.eyes[t], track.mouth[t], self.settings.recipe)
            params[t] = quad_params(quad_raw[t])
        params = fill_missing(params, found)
        for t in np.flatnonzero(~found):
            quad_raw[t] = quad_from_params(params[t])
        smoothed = smooth(params, self.settings.landmark_smoothing, float(self.fps))
        quad = np.stack([quad_from_params(p) for p in smoothed])
        crop_quad = np.stack([crop_quad_from(q) for q in quad])
        transform = np.stack([transform_between(q, c) for q, c in zip(quad, crop_quad)])
        nearest = nearest_found(found)
        mask_local = np.stack([quad_local(quad_raw[n], track.landmarks[n]) for n in nearest]).astype(np.float32)
        return Alignment(found=found, quad_raw=quad_raw, quad=quad, crop_quad=crop_quad, transform=transform,
                         inverse_transform=np.linalg.inv(transform), mask_local=mask_local)

    def align_key(self, track_key: str) -> str:
        s = self.settings
        return _digest({"track": track_key, "smoothing": s.landmark_smoothing.record(), "recipe": s.recipe,
                        "size": self.crop_size(), "supersample": s.supersample})

    def align(self, track: Track, track_key: str) -> tuple[Alignment, str]:
        key = self.align_key(track_key)
        t0 = time.perf_counter()
        alignment = self.compute_alignment(track)
        self._write_alignment_json(alignment)
        frames = len(alignment.found)
        if self.cache.done("align", key):
            self._stage("align", time.perf_counter() - t0, True, frames)
            return alignment, key
        resume = self.cache.resumable("align", key)
        self.cache.begin("align", key)
        aligned_dir, crop_dir = self.outdir / "frames" / "aligned", self.outdir / "frames" / "crops"
        aligned_dir.mkdir(parents=True, exist_ok=True)
        crop_dir.mkdir(parents=True, exist_ok=True)
        size = self.crop_size()
        self.reporter.start("align crops", frames)
        reused = 0
        for t, frame in enumerate(self.frames()):
            if t >= frames:
                break
            aligned_path, crop_path = aligned_dir / f"{t:06d}.png", crop_dir / f"{t:06d}.png"
            if resume and aligned_path.is_file() and crop_path.is_file():
                reused += 1
            else:
                save_image(crop_from_quad(frame, alignment.quad[t], size, self.settings.supersample), aligned_path)
                save_image(crop_from_quad(frame, alignment.crop_quad[t], size, self.settings.supersample), crop_path)
            self.reporter.advance()
        self.reporter.finish()
        self.cache.finish("align", key, frames=frames)
        self._stage("align", time.perf_counter() - t0, False, frames, resumed_frames=reused)
        return alignment, key

    def _write_alignment_json(self, a: Alignment) -> None:
        records = []
        for t in range(len(a.found)):
            records.append({"frame": t, "face_found": bool(a.found[t]),
                            "quad_raw": a.quad_raw[t].tolist() if a.found[t] else None,
                            "quad": a.quad[t].tolist(), "crop_quad": a.crop_quad[t].tolist(),
                            "transform": a.transform[t].tolist(), "inverse_transform": a.inverse_transform[t].tolist(),
                            "angle": transform_parameters(a.transform[t])[0]})
        missing = [int(t) for t in np.flatnonzero(~a.found)]
        write_json({"source": str(self.source), "recipe": self.settings.recipe, "size": self.crop_size(),
                    "fps": float(self.fps), "smoothing": self.settings.landmark_smoothing.record(),
                    "frames_without_face": missing, "frames": records}, self.outdir / "alignment.json")

    # -- stage 3 ------------------------------------------------------------------------------------------

    def _encoder_input(self, t: int) -> torch.Tensor:
        from .invert import encoder_input

        return encoder_input(np.asarray(Image.open(self.outdir / "frames" / "aligned" / f"{t:06d}.png").convert("RGB")))

    def invert_key(self, align_key: str) -> str:
        return _digest({"align": align_key, "encoder": _file_identity(Path(self.encoder_path)),
                        "network": _file_identity(Path(self.network)) if self.network and Path(self.network).is_file()
                        else self.network, "steps": self.settings.invert_steps})

    def invert(self, frames: int, align_key: str) -> tuple[np.ndarray, str]:
        """Raw per-frame W+ latents [T, num_ws, w_dim] (memory-mapped file)."""
        key = self.invert_key(align_key)
        folder = self.cache.dir / "invert"
        raw_path = self.cache.dir / "latents_raw.npy"
        t0 = time.perf_counter()
        if self.cache.done("invert", key) and raw_path.is_file():
            self._stage("invert", time.perf_counter() - t0, True, frames)
            return np.load(raw_path, mmap_mode="r"), key
        resume = self.cache.resumable("invert", key)
        self.cache.begin("invert", key)
        folder.mkdir(parents=True, exist_ok=True)
        if not resume:
            for old in folder.glob("*.npy"):
                old.unlink()
        inverter = self.inverter
        batch = self.settings.batch_size
        self.reporter.start("invert", frames)
        reused = 0
        for first in range(0, frames, batch):
            chunk = folder / f"{first:06d}.npy"
            last = min(frames, first + batch)
            if chunk.is_file():
                reused += last - first
            else:
                x = torch.stack([self._encoder_input(t) for t in range(first, last)])
                steps = inverter.invert(x, steps=self.settings.invert_steps)
                np.save(chunk, steps[-1].latents.detach().cpu().numpy().astype(np.float32))
            self.reporter.advance(last - first)
        self.reporter.finish()
        first_chunk = np.load(folder / f"{0:06d}.npy")
        raw = np.lib.format.open_memmap(raw_path, mode="w+", dtype=np.float32, shape=(frames, *first_chunk.shape[1:]))
        for first in range(0, frames, batch):
            raw[first:first + batch] = np.load(folder / f"{first:06d}.npy")
        raw.flush()
        del raw
        self.cache.finish("invert", key, frames=frames)
        self._stage("invert", time.perf_counter() - t0, False, frames, resumed_frames=reused)
        return np.load(raw_path, mmap_mode="r"), key

    def fine_layers(self, num_ws: int) -> list[int]:
        layers = self.settings.fine_layers
        if layers is None:
            return list(range(num_ws // 2, num_ws))
        bad = [i for i in layers if not 0 <= i < num_ws]
        if bad:
            raise SgtoolError(f"fine_layers {bad[0]} is out of range: this generator has style inputs 0-{num_ws - 1}")
        return list(layers)

    def smooth_latents(self, raw: np.ndarray, invert_key: str) -> tuple[np.ndarray, str]:
        """latents.npy = [2, T, num_ws, w_dim]: index 0 raw, 1 smoothed (+ fine layers frozen)."""
        s = self.settings
        key = _digest({"invert": invert_key, "smoothing": s.latent_smoothing.record(), "freeze_fine": s.freeze_fine,
                       "fine_layers": s.fine_layers})
        path = self.outdir / "latents.npy"
        t0 = time.perf_counter()
        frames = raw.shape[0]
        if self.cache.done("smooth", key) and path.is_file():
            self._stage("smooth", time.perf_counter() - t0, True, frames)
            return np.load(path, mmap_mode="r")[1], key
        self.cache.begin("smooth", key)
        tmp = path.with_name(".latents.tmp.npy")
        both = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(2, *raw.shape))
        both[0] = raw
        smooth_into(raw, both[1], s.latent_smoothing, float(self.fps))
        if s.freeze_fine:
            for layer in self.fine_layers(raw.shape[1]):
                both[1, :, layer] = both[1, :, layer].mean(axis=0, dtype=np.float64)
        both.flush()
        del both
        os.replace(tmp, path)
        self.cache.finish("smooth", key, layout="[2, frames, num_ws, w_dim]: 0 raw, 1 smoothed")
        self._stage("smooth", time.perf_counter() - t0, False, frames)
        return np.load(path, mmap_mode="r")[1], key

    # -- stage 4 ------------------------------------------------------------------------------------------

    def tune(self, latents: np.ndarray, alignment: Alignment, smooth_key: str):
        """Joint PTI over `tune_frames` evenly spaced frames; returns the tuned generator (or the original)."""
        s = self.settings
        if s.tune_frames <= 0:
            return self.generator
        from ..models import load_generator
        from .tune import TuneSettings, TuneTarget, tune_and_save

        frames = latents.shape[0]
        count = min(s.tune_frames, frames)
        picks = sorted(set(np.linspace(0, frames - 1, count).round().astype(int).tolist()))
        settings = TuneSettings(**s.tune)
        key = _digest({"smooth": smooth_key, "frames": picks, "settings": asdict(settings)})
        folder = self.outdir / "tune"
        weights = folder / "tuned_generator.safetensors"
        t0 = time.perf_counter()
        if self.cache.done("tune", key) and weights.is_file():
            generator = load_generator(weights, device=self.device)
            self._stage("tune", time.perf_counter() - t0, True, len(picks))
            return generator
        if not self.cache.resumable("tune", key):
            (folder / "checkpoint.pt").unlink(missing_ok=True)  # belongs to other frames or settings
        self.cache.begin("tune", key)
        generator = self.generator
        resolution = generator.img_resolution
        targets = []
        for t in picks:
            img = Image.open(self.outdir / "frames" / "crops" / f"{t:06d}.png").convert("RGB")
            if img.size != (resolution, resolution):
                img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
            pixels = torch.from_numpy(np.asarray(img, np.float32)).permute(2, 0, 1) / 127.5 - 1
            targets.append(TuneTarget(name=f"frame{t:06d}", image=pixels, latent=torch.from_numpy(np.array(latents[t])),
                                      transform=torch.from_numpy(alignment.inverse_transform[t].astype(np.float32)),
                                      source=f"frame {t}"))
        self.reporter.start("tune (PTI)", settings.steps)
        summary = tune_and_save(generator, targets, settings, folder, network=str(self.network or self.encoder_path),
                                lpips_model=self.lpips_model, device=self.device,
                                on_step=lambda record: self.reporter.advance(),
                                extra_config={"video": str(self.source), "frames": picks})
        self.reporter.finish()
        self.cache.finish("tune", key, frames=picks)
        self._stage("tune", time.perf_counter() - t0, False, len(picks), steps=summary["steps_done"])
        return summary["generator"].eval().requires_grad_(False)

    # -- stage 5 ------------------------------------------------------------------------------------------

    def prepare_edits(self, generator):
        from ..config import load_config
        from ..editing.directions import DirectionRegistry, generator_hint, parse_named_file
        from .edit import prepare_edits

        if not self.settings.edits:
            return []
        registry = self.edit_registry or DirectionRegistry.from_config(load_config("edit"))
        extra = dict(parse_named_file(text) for text in self.settings.directions)
        hint = generator_hint(self.network or self.encoder_path, generator)
        edits = prepare_edits(generator, self.settings.edits, registry, extra, hint)
        names = [e.name for e in edits]
        if len(set(names)) != len(names):
            raise SgtoolError(f"--edit names a direction twice ({', '.join(names)}); give each once")
        return edits

    def ramp(self, t: int) -> float:
        """Edit strength factor at frame t: a smoothstep from 0 to 1 over `edit_ramp` seconds."""
        if self.settings.edit_ramp <= 0:
            return 1.0
        x = min(1.0, t / (self.settings.edit_ramp * float(self.fps)))
        return x * x * (3 - 2 * x)

    def render(self, generator, latents: np.ndarray, alignment: Alignment, edits) -> dict:
        from ..editing.directions import apply_edits
        from ..utils.io import to_uint8
        from .edit import render as render_ws

        s = self.settings
        frames = len(alignment.found)
        size = self.crop_size()
        height, width = self._frame_shape()
        writers: dict[str, VideoWriter] = {}
        out_paths = {name: self.outdir / f"{name}.mp4" for name in s.outputs}
        sizes = {"output": (width, height), "side_by_side": (2 * width, height),
                 "input_crops": (size, size), "recon": (size, size), "edited": (size, size)}
        t0 = time.perf_counter()
        need_recon = "recon" in s.outputs or not edits
        need_edit = bool(edits) and bool({"output", "edited", "side_by_side"} & set(s.outputs))
        selfie = SelfieSegmenter() if s.mask.selfie else None
        stitch_changed = []
        try:
            for name in s.outputs:
                w, h = sizes[name]
                writers[name] = VideoWriter(out_paths[name].with_name(f".{name}.video.mp4")
                                            if name in ("output", "side_by_side") else out_paths[name],
                                            w, h, self.fps, crf=s.crf, preset=s.preset)
            self.reporter.start("render + paste", frames)
            decoded = self.frames()
            for first in range(0, frames, s.batch_size):
                idx = list(range(first, min(frames, first + s.batch_size)))
                ws = torch.from_numpy(np.array(latents[first:idx[-1] + 1], dtype=np.float32))
                inv = torch.from_numpy(alignment.inverse_transform[idx].astype(np.float32))
                recon = render_ws(generator, ws, inv) if need_recon else None
                edited = recon
                edited_ws = ws
                if edits and need_edit:
                    full = apply_edits(ws, edits, s.edit_layers)
                    factors = torch.tensor([self.ramp(t) for t in idx], dtype=ws.dtype).view(-1, 1, 1)
                    edited_ws = ws + factors * (full - ws)
                    edited = render_ws(generator, edited_ws, inv)
                for k, t in enumerate(idx):
                    frame = next(decoded, None)
                    if frame is None:
                        raise SgtoolError(f"{self.source} yielded fewer frames than before ({t} < {frames}); "
                                          "pass --force")
                    crop_img = np.asarray(Image.open(self.outdir / "frames" / "crops" / f"{t:06d}.png").convert("RGB"))
                    landmarks = quad_global(alignment.quad[t], alignment.mask_local[t])
                    person = selfie(frame) if selfie is not None else None
                    mask, roi = head_mask(landmarks, frame.shape, s.mask, person)
                    edited_img = to_uint8(edited[k:k + 1])[0] if edited is not None else None
                    if s.stitch_steps and edits and edited_img is not None:
                        edited_img, change = self.stitch(generator, edited_ws[k], inv[k], edited[k], crop_img,
                                                         alignment, t, landmarks)
                        stitch_changed.append(change)
                    pasted = paste(frame, edited_img, alignment.crop_quad[t], mask, roi) if edited_img is not None \
                        else frame
                    self._write(writers, "output", pasted)
                    self._write(writers, "side_by_side", np.concatenate([frame, pasted], axis=1))
                    self._write(writers, "input_crops", crop_img)
                    if recon is not None:
                        self._write(writers, "recon", _resize(to_uint8(recon[k:k + 1])[0], size))
                    if edited_img is not None:
                        self._write(writers, "edited", _resize(edited_img, size))
                    self.reporter.advance()
            self.reporter.finish()
            if next(decoded, None) is not None:
                raise SgtoolError(f"{self.source} yielded more frames than before; pass --force")
            for writer in writers.values():
                writer.close()
        except BaseException:
            for writer in writers.values():
                writer.close(ok=False)
            raise
        finally:
            if selfie is not None:
                selfie.close()
        seconds = time.perf_counter() - t0
        audio = None
        t1 = time.perf_counter()
        for name in ("output", "side_by_side"):
            if name not in s.outputs:
                continue
            tmp = writers[name].path
            if self.info.has_audio:
                audio = mux_audio(tmp, self.source, out_paths[name], s.start, frames / float(self.fps))
                tmp.unlink(missing_ok=True)
            else:
                os.replace(tmp, out_paths[name])
        self._stage("render", seconds, False, frames, stitch_tuned=bool(stitch_changed))
        self._stage("encode_audio", time.perf_counter() - t1, False, frames, audio=audio)
        return {"outputs": {name: str(path) for name, path in out_paths.items()}, "audio": audio}

    @staticmethod
    def _write(writers: dict, name: str, frame) -> None:
        if name in writers and frame is not None:
            writers[name].write(frame)

    def _frame_shape(self) -> tuple[int, int]:
        record = self.cache.record("track")
        return int(record["height"]), int(record["width"])

    def stitch(self, generator, ws, inverse_transform, edited_render, crop_img, alignment: Alignment, t: int,
               landmarks: np.ndarray):
        """"Stitch it in Time": tune a copy of the generator for this frame so the render matches the
        original crop outside the head mask and the plain edit inside it. Returns (uint8 crop, mean change)."""
        from ..utils.io import to_uint8
        from .tune import tunable_parameters

        s = self.settings
        resolution = generator.img_resolution
        # The head mask drawn in the render's pixel grid (the crop maps to the whole render).
        to_source = crop_to_source_matrix(alignment.crop_quad[t], resolution)
        to_render = cv2.invertAffineTransform(to_source)
        points = landmarks @ to_render[:, :2].T + to_render[:, 2]
        mask, roi = head_mask(points, (resolution, resolution), s.mask)
        inside = np.zeros((resolution, resolution), np.float32)
        y0, y1, x0, x1 = roi
        inside[y0:y1, x0:x1] = mask
        inside_t = torch.from_numpy(inside).to(self.device)[None, None]
        original = cv2.resize(crop_img, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4) \
            if crop_img.shape[0] != resolution else crop_img
        original_t = (torch.from_numpy(original.astype(np.float32)).permute(2, 0, 1)[None] / 127.5 - 1).to(self.device)
        goal_inside = edited_render[None].to(self.device)
        tuned = copy.deepcopy(generator)
        params = [p for _, p in tunable_parameters(tuned)]
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(params, lr=s.stitch_lr)
        ws = ws[None].to(self.device)
        inv = inverse_transform[None].to(self.device)
        with torch.enable_grad():
            for _ in range(s.stitch_steps):
                optimizer.zero_grad(set_to_none=True)
                image = tuned.synthesis(ws, noise_mode="const", transform=inv)
                loss = (((image - original_t) ** 2) * (1 - inside_t)).mean() + \
                    (((image - goal_inside) ** 2) * inside_t).mean()
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            image = tuned.synthesis(ws, noise_mode="const", transform=inv)
        change = float((image - goal_inside).abs().mean())
        return to_uint8(image)[0], change

    # -- all ----------------------------------------------------------------------------------------------

    def run(self) -> dict:
        t_start = time.perf_counter()
        track = self.track()
        track_key = self.track_key()
        alignment, align_key = self.align(track, track_key)
        frames = len(alignment.found)
        raw, invert_key = self.invert(frames, align_key)
        latents, smooth_key = self.smooth_latents(raw, invert_key)
        generator = self.tune(latents, alignment, smooth_key)
        edits = self.prepare_edits(generator)
        rendered = self.render(generator, latents, alignment, edits)
        params_raw = np.stack([quad_params(q) for q in alignment.quad_raw])
        params_smooth = np.stack([quad_params(q) for q in alignment.quad])
        missing = [int(t) for t in np.flatnonzero(~alignment.found)]
        summary = {
            "source": self.info.record(), "outdir": str(self.outdir), "frames": frames, "fps": float(self.fps),
            "fps_rational": f"{self.fps.numerator}/{self.fps.denominator}",
            "duration": frames / float(self.fps), "frame_size": [track.width, track.height],
            "crop_size": self.crop_size(), "frames_without_face": missing,
            "quad_jitter": {"raw": jitter(params_raw), "smoothed": jitter(params_smooth)},
            "latent_jitter": {"raw": jitter(np.asarray(raw).reshape(frames, -1)),
                              "smoothed": jitter(np.asarray(latents).reshape(frames, -1))},
            "edits": [{"name": e.name, "strength": e.strength, "direction": e.source} for e in edits],
            "tuned": self.settings.tune_frames > 0, "audio": rendered["audio"],
            "outputs": rendered["outputs"], "alignment": str(self.outdir / "alignment.json"),
            "latents": str(self.outdir / "latents.npy"),
            "latents_layout": "[2, frames, num_ws, w_dim]: index 0 raw, 1 smoothed",
            "stages": self.stages, "seconds": round(time.perf_counter() - t_start, 3),
            "settings": _settings_record(self.settings), "encoder": str(self.encoder_path),
            "network": str(self.network) if self.network else None,
        }
        write_json(summary, self.outdir / "video.json")
        return summary


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size:
        return image
    interpolation = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LANCZOS4
    return cv2.resize(image, (size, size), interpolation=interpolation)


def _settings_record(settings: VideoSettings) -> dict:
    record = asdict(settings)
    return record


def run_video(source, outdir, encoder, settings: VideoSettings | None = None, network=None,
              reporter: Reporter | None = None, **kwargs) -> dict:
    """Run every stage for `source` into `outdir` and return the video.json summary."""
    return VideoPipeline(source, outdir, encoder, settings or VideoSettings(), network=network, reporter=reporter,
                         **kwargs).run()
