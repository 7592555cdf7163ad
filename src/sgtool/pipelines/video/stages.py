"""The clip stages that `sgtool video` and `sgtool expand-fov` share, declared in order (CLIP_STAGES).

track   the main face in every frame                                  (tracking.py)
align   quads smoothed over time (zero-phase), FFHQ-aligned crops for the encoder and unaligned
        crops with their landmarks transforms; frames without a face filled from their neighbours
invert  the encoder over every aligned crop, in batches; chunks are named by their first and
        last frame, so a resumed run may use another batch size
smooth  the latents smoothed over time (every frame kept); the fine style inputs replaced by
        their mean over the clip (stylegan3-editing's video pipeline always does)
tune    optional joint PTI over evenly spaced frames

Settings that change no stage's result (batch_size, crf, preset, force) are in no key: NOT_KEYED.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from ...utils.io import save_image, save_npy, write_json
from ..align.run import crop_from_quad, crop_quad_from, quad_from_landmarks, transform_between, transform_parameters
from ..shared.images import encoder_input, generator_target, read_image
from ..shared.smoothing import smooth, smooth_into
from ...utils.io import file_identity
from .cache import StageEntry, save_npz, written_memmap
from .clip import Clip, Stage
from .quads import fill_missing, nearest_found, quad_from_params, quad_local, quad_params
from .tracking import Track, read_track, track_clip

NOT_KEYED = ("batch_size", "crf", "preset", "force")


# ---------------------------------------------------------------------------------------------------------
# align


@dataclass
class Alignment:
    found: np.ndarray  # [T] bool
    quad_raw: np.ndarray  # [T, 4, 2] (filled where no face)
    quad: np.ndarray  # smoothed
    crop_quad: np.ndarray
    transform: np.ndarray  # [T, 3, 3]
    inverse_transform: np.ndarray
    mask_local: np.ndarray  # [T, 478, 2] landmarks in the raw quad's coordinates (nearest frame with a face)
    folder: Path  # aligned/ and crops/ (one PNG per frame) and alignment.json

    def aligned_path(self, t: int) -> Path:
        return self.folder / "aligned" / f"{t:06d}.png"

    def crop_path(self, t: int) -> Path:
        return self.folder / "crops" / f"{t:06d}.png"


ALIGNMENT_ARRAYS = [f.name for f in fields(Alignment) if f.name != "folder"]


def alignment_from_track(track: Track, clip: Clip, folder: Path) -> Alignment:
    found, options = track.found, clip.options
    quad_raw = np.zeros((len(found), 4, 2))
    params = np.zeros((len(found), 4))
    for t in np.flatnonzero(found):
        quad_raw[t] = quad_from_landmarks(track.eyes[t], track.mouth[t], options.recipe)
        params[t] = quad_params(quad_raw[t])
    params = fill_missing(params, found)
    for t in np.flatnonzero(~found):
        quad_raw[t] = quad_from_params(params[t])
    quad = np.stack([quad_from_params(p) for p in smooth(params, options.landmark_smoothing, float(clip.fps))])
    crop_quad = np.stack([crop_quad_from(q) for q in quad])
    transform = np.stack([transform_between(q, c) for q, c in zip(quad, crop_quad)])
    mask_local = np.stack([quad_local(quad_raw[n], track.landmarks[n]) for n in nearest_found(found)])
    return Alignment(found, quad_raw, quad, crop_quad, transform, np.linalg.inv(transform),
                     mask_local.astype(np.float32), folder)


def align_clip(clip: Clip, entry: StageEntry, products: dict) -> Alignment:
    alignment = alignment_from_track(products["track"], clip, entry.dir)
    save_npz(entry.path("alignment.npz"), **{name: getattr(alignment, name) for name in ALIGNMENT_ARRAYS})
    write_json(_alignment_record(alignment, clip), entry.path("alignment.json"))
    size, supersample = clip.crop_size, clip.options.supersample
    reused = 0
    clip.reporter.start("align crops", clip.frame_count)
    for t, frame in zip(range(clip.frame_count), clip.frames()):
        aligned, crop = alignment.aligned_path(t), alignment.crop_path(t)
        if entry.resumed and aligned.is_file() and crop.is_file():
            reused += 1
        else:
            save_image(crop_from_quad(frame, alignment.quad[t], size, supersample), aligned)
            save_image(crop_from_quad(frame, alignment.crop_quad[t], size, supersample), crop)
        clip.reporter.advance()
    clip.reporter.finish()
    clip.note(resumed_frames=reused)
    return alignment


def read_alignment(clip: Clip, entry: StageEntry, products: dict) -> Alignment:
    with np.load(entry.path("alignment.npz")) as data:
        return Alignment(**{name: data[name] for name in ALIGNMENT_ARRAYS}, folder=entry.dir)


def _alignment_record(a: Alignment, clip: Clip) -> dict:
    """alignment.json: per frame the quads and the landmarks transform (inverse: what synthesis takes)."""
    frames = [{"frame": t, "face_found": bool(a.found[t]), "quad_raw": a.quad_raw[t].tolist() if a.found[t] else None,
               "quad": a.quad[t].tolist(), "crop_quad": a.crop_quad[t].tolist(), "transform": a.transform[t].tolist(),
               "inverse_transform": a.inverse_transform[t].tolist(), "angle": transform_parameters(a.transform[t])[0]}
              for t in range(len(a.found))]
    return {"source": str(clip.source), "recipe": clip.options.recipe, "size": clip.crop_size, "fps": float(clip.fps),
            "smoothing": clip.options.landmark_smoothing.record(),
            "frames_without_face": [int(t) for t in np.flatnonzero(~a.found)], "frames": frames}


# ---------------------------------------------------------------------------------------------------------
# invert


def _chunk_frames(path: Path) -> tuple[int, int]:
    first, last = path.stem.split("-")
    return int(first), int(last)


def _missing_batches(covered: np.ndarray, size: int):
    """Runs of consecutive frames not inverted yet, at most `size` long."""
    batch: list[int] = []
    for t in np.flatnonzero(~covered):
        if batch and (t != batch[-1] + 1 or len(batch) == size):
            yield batch
            batch = []
        batch.append(int(t))
    if batch:
        yield batch


def invert_clip(clip: Clip, entry: StageEntry, products: dict) -> np.ndarray:
    """Raw per-frame W+ latents [T, num_ws, w_dim] (memory-mapped)."""
    alignment: Alignment = products["align"]
    frames = clip.frame_count
    chunk_dir = entry.path("chunks")
    chunk_dir.mkdir(exist_ok=True)
    covered = np.zeros(frames, bool)
    for chunk in chunk_dir.glob("[0-9]*-[0-9]*.npy"):
        first, last = _chunk_frames(chunk)
        covered[first:last + 1] = True
    inverter, steps = clip.models.inverter, clip.encoder_steps()
    clip.note(resumed_frames=int(covered.sum()))
    clip.reporter.start("invert", frames)
    clip.reporter.advance(int(covered.sum()))
    for batch in _missing_batches(covered, clip.options.batch_size):
        x = torch.stack([encoder_input(read_image(alignment.aligned_path(t))) for t in batch])
        latents = inverter.invert(x, steps=steps)[-1].latents
        save_npy(latents.detach().cpu().numpy().astype(np.float32), chunk_dir / f"{batch[0]:06d}-{batch[-1]:06d}.npy")
        clip.reporter.advance(len(batch))
    clip.reporter.finish()
    chunks = sorted(chunk_dir.glob("[0-9]*-[0-9]*.npy"))
    shape = np.load(chunks[0], mmap_mode="r").shape[1:]
    with written_memmap(entry.path("latents_raw.npy"), (frames, *shape)) as raw:
        for chunk in chunks:
            first, last = _chunk_frames(chunk)
            raw[first:last + 1] = np.load(chunk)
    return read_raw_latents(clip, entry, products)


def read_raw_latents(clip: Clip, entry: StageEntry, products: dict) -> np.ndarray:
    return np.load(entry.path("latents_raw.npy"), mmap_mode="r")


# ---------------------------------------------------------------------------------------------------------
# smooth


LATENTS_LAYOUT = "[2, frames, num_ws, w_dim]: index 0 raw, 1 smoothed"


def smooth_clip(clip: Clip, entry: StageEntry, products: dict) -> np.ndarray:
    """The smoothed latents [T, num_ws, w_dim]; latents.npy holds the raw ones beside them."""
    raw = products["invert"]
    with written_memmap(entry.path("latents.npy"), (2, *raw.shape)) as both:
        both[0] = raw
        smooth_into(raw, both[1], clip.options.latent_smoothing, float(clip.fps))
        if clip.options.freeze_fine:
            for layer in clip.fine_layers():
                both[1, :, layer] = both[1, :, layer].mean(axis=0, dtype=np.float64)
    entry.meta["layout"] = LATENTS_LAYOUT
    return read_smoothed(clip, entry, products)


def read_smoothed(clip: Clip, entry: StageEntry, products: dict) -> np.ndarray:
    return np.load(entry.path("latents.npy"), mmap_mode="r")[1]


# ---------------------------------------------------------------------------------------------------------
# tune


def tune_picks(frames: int, count: int) -> list[int]:
    return sorted(set(np.linspace(0, frames - 1, min(count, frames)).round().astype(int).tolist()))


def tune_clip(clip: Clip, entry: StageEntry, products: dict):
    """Joint PTI over `tune_frames` evenly spaced frames (their unaligned crops); returns the tuned generator."""
    from ..tune.run import TuneTarget, tune_and_save

    alignment: Alignment = products["align"]
    latents = products["smooth"]
    generator = clip.models.generator
    resolution = generator.img_resolution
    picks = tune_picks(clip.frame_count, clip.options.tune_frames)
    unaligned = generator.kind == "stylegan3"  # StyleGAN2 has no input transform: its aligned faces are the targets
    targets = [TuneTarget(name=f"frame{t:06d}",
                          image=generator_target(read_image(alignment.crop_path(t) if unaligned
                                                            else alignment.aligned_path(t)), resolution),
                          latent=torch.from_numpy(np.array(latents[t])),
                          transform=torch.from_numpy(alignment.inverse_transform[t].astype(np.float32))
                          if unaligned else None,
                          source=f"frame {t}") for t in picks]
    clip.reporter.start("tune (PTI)", clip.options.tune.steps)
    summary = tune_and_save(generator, targets, clip.options.tune, entry.dir, network=clip.models.name,
                            lpips_model=clip.lpips_model, device=clip.models.device,
                            on_step=lambda record: clip.reporter.advance(),
                            extra_config={"video": str(clip.source), "frames": picks})
    clip.reporter.finish()
    entry.meta["frames"] = picks
    clip.note(frames=len(picks), steps=summary["steps_done"])
    return summary["generator"].eval().requires_grad_(False)


def read_tuned(clip: Clip, entry: StageEntry, products: dict):
    from ...models import load_generator

    clip.note(frames=len(entry.record["frames"]))
    return load_generator(entry.path("tuned_generator.safetensors"), device=clip.models.device)


# ---------------------------------------------------------------------------------------------------------


TRACK = Stage("track", track_clip, read_track, keyed_by=("start", "end", "max_frames", "fps", "face",
                                                          "min_face_size"),
              identity=lambda clip: file_identity(clip.source))
ALIGN = Stage("align", align_clip, read_alignment, keyed_by=("recipe", "landmark_smoothing", "size", "supersample"))
INVERT = Stage("invert", invert_clip, read_raw_latents, keyed_by=("encoder_steps",),
               identity=lambda clip: clip.require_models("inversion").identity())
SMOOTH = Stage("smooth", smooth_clip, read_smoothed, keyed_by=("latent_smoothing", "freeze_fine", "fine_layers"))
TUNE = Stage("tune", tune_clip, read_tuned, keyed_by=("tune_frames", "tune"),
             active=lambda options: options.tune_frames > 0)

CLIP_STAGES = (TRACK, ALIGN, INVERT, SMOOTH, TUNE)


def renderer(clip: Clip, products: dict):
    """The generator the last stage renders with: the tuned one, else the models' own."""
    return products["tune"] if "tune" in products else clip.models.generator
