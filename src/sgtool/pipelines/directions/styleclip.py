"""`sgtool directions styleclip`: StyleCLIP global-direction files for any generator.

    summary = run_styleclip(StyleclipDirectionsSettings(network="my_cats.pkl", samples=300, outdir="dirs/"))
    clip = load_clip("clip-vit-b-32-openai")                                           # or, with your own CLIP:
    summary = build_clip_directions(G, clip, "dirs/", BuildOptions(samples=300), hint="my_cats.pkl")

The references' recipe (stylegan3-editing's s_statistics.py and create_delta_i_c.py):
1. S statistics: S of `stats_samples` mapped z (RandomState(seed), psi 0.5, cutoff 8), per-channel mean
   and std (plus the mean input pose for StyleGAN3) -> `s_stats` / `S_mean_std`.
2. delta_i_c: for each S channel (StyleGAN2: the non-torgb ones) and each of the first `samples`
   samples, render S with that channel set to mean - strength x std and mean + strength x std
   (strength 5 for faces, 10 otherwise); CLIP features of both, normalised, subtracted and
   normalised; averaged over the samples and normalised -> one row of `delta_i_c.npy` / `fs3.npy`.
   Each channel is moved alone from the sample's own S (the reference scripts leave the channels
   they have done at their last value for the channels after them).
Rows are written in chunks of channels to `<outdir>/<file>.partial/` (each atomically, with the settings
they were made with): an interrupted build resumes where it stopped and gives the same file as an
uninterrupted one. The delta_i_c file is written once it is complete.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ...device import resolve_device
from ...editing.clip_text import ClipEncoder, clip_model, load_clip, weights_digest
from ...editing.directions import generator_hint
from ...editing.styleclip import (
    FILE_NAMES,
    default_strength,
    direction_layers,
    save_delta_i_c,
    save_s_stats,
)
from ...editing.stylespace import (
    STATS_CUTOFF,
    STATS_PSI,
    render_s,
    s_statistics,
    sample_ws,
    style_layers,
    w_to_s,
)
from ...errors import SgtoolError
from ...models import load_generator
from ...progress import SILENT, Reporter
from ...settings import StyleclipDirectionsSettings
from ...utils.io import check_writable, save_npy, write_json
from ...utils.records import read_json
from ..shared.batch import StopRequest
from ..shared.render import device_of

RECORD = "clip_directions.json"  # the settings a finished build was made with
RECORD_FORMAT = 1
_ROWS_FILE = re.compile(r"rows_(\d{6})_(\d{6})\.npy")


@dataclass(frozen=True)
class BuildOptions:
    samples: int = 300  # images averaged per channel (the references used 300)
    stats_samples: int = 100_000  # samples behind the S mean and std (the references' number)
    strength: float | None = None  # channel move in std units; None: 5 for faces, 10 otherwise (by the hint)
    truncation_psi: float = STATS_PSI
    truncation_cutoff: int | None = STATS_CUTOFF
    seed: int = 0
    batch_size: int = 16  # images per render and CLIP pass
    chunk_channels: int = 32  # channels between two saves of the partial rows

    def __post_init__(self):
        for name in ("samples", "batch_size", "chunk_channels"):
            if getattr(self, name) < 1:
                raise SgtoolError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.stats_samples < 2:
            raise SgtoolError(f"stats_samples must be at least 2, got {self.stats_samples}")
        if self.strength is not None and not (np.isfinite(self.strength) and self.strength > 0):
            raise SgtoolError(f"strength must be a positive number of stds, got {self.strength}")


@dataclass(frozen=True)
class Channel:
    layer: str
    index: int


def direction_channels(generator, stats) -> list[Channel]:
    """The S channels delta_i_c rows stand for, in row order (StyleGAN2 leaves out torgb, as StyleCLIP)."""
    layers = list(stats.std)
    if generator.kind == "stylegan2":
        layers = [name for name in layers if not name.endswith(".torgb")]
    rows = [Channel(name, c) for name in layers for c in range(len(stats.std[name]))]
    direction_layers(stats.std, len(rows))  # the layout the readers expect
    return rows


def delta_rows(features: np.ndarray) -> np.ndarray:
    """[channels, samples, 2 (minus, plus), D] raw CLIP features -> unit delta_i_c rows [channels, D]
    (a channel that changes nothing gives a zero row)."""
    def unit(x):
        norm = np.linalg.norm(x, axis=-1, keepdims=True)
        return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)

    features = unit(features.astype(np.float64))
    return unit(unit(features[:, :, 1] - features[:, :, 0]).mean(axis=1)).astype(np.float32)


@torch.no_grad()
def channel_features(generator, clip: ClipEncoder, base: dict, stats, channels: list[Channel], strength: float,
                     batch_size: int) -> np.ndarray:
    """Raw CLIP features [channels, samples, 2, D] of each sample with one channel at mean -/+ strength x std."""
    samples = next(iter(base.values())).shape[0]
    jobs = [(k, i, side) for k in range(len(channels)) for i in range(samples) for side in (0, 1)]
    features = np.zeros([len(channels), samples, 2, clip.features], dtype=np.float32)
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start:start + batch_size]
        rows = torch.tensor([i for _, i, _ in batch])
        styles = {name: values[rows] for name, values in base.items()}  # indexing copies
        for j, (k, _, side) in enumerate(batch):
            channel = channels[k]
            mean = float(stats.mean[channel.layer][channel.index])
            std = float(stats.std[channel.layer][channel.index])
            styles[channel.layer][j, channel.index] = mean + (strength if side else -strength) * std
        encoded = clip.encode_images(render_s(generator, styles)).cpu().numpy()
        for j, (k, i, side) in enumerate(batch):
            features[k, i, side] = encoded[j]
    return features


def _done_rows(folder: Path) -> list[tuple[int, int, Path]]:
    """The chunk files saved so far that continue each other from channel 0."""
    found = sorted((int(m.group(1)), int(m.group(2)), path) for path in folder.glob("rows_*.npy")
                   if (m := _ROWS_FILE.fullmatch(path.name)))
    contiguous, next_start, width = [], 0, None
    for start, stop, path in found:
        if start != next_start:
            break
        rows = _read_rows(path)
        if rows.shape[0] != stop - start or (width is not None and rows.shape[1] != width):
            raise SgtoolError(f"{path} holds {rows.shape[0]} rows of {rows.shape[1]} values, not {stop - start} like "
                              "the other chunks; delete the .partial folder and build again")
        width = rows.shape[1]
        contiguous.append((start, stop, path))
        next_start = stop
    return contiguous


def _read_rows(path: Path) -> np.ndarray:
    """A saved chunk of delta_i_c rows: a 2-D array of finite floats (no pickled objects)."""
    try:
        rows = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise SgtoolError(f"{path} is not a saved chunk of rows ({exc}); delete the .partial folder and build "
                          "again") from None
    if rows.ndim != 2 or not np.issubdtype(rows.dtype, np.floating) or not np.all(np.isfinite(rows)):
        raise SgtoolError(f"{path} does not hold finite rows of floats; delete the .partial folder and build again")
    return rows


def _settings_record(generator, clip: ClipEncoder, options: BuildOptions, strength: float) -> dict:
    """What the rows depend on (batch and chunk sizes only group the work)."""
    record = {key: value for key, value in asdict(options).items() if key not in ("batch_size", "chunk_channels")}
    return {"format": RECORD_FORMAT, **record, "strength": strength, "kind": generator.kind,
            "layers": [[layer.name, layer.channels] for layer in style_layers(generator)],
            "generator_sha256": weights_digest(generator), "clip_sha256": clip.fingerprint()}


def build_clip_directions(generator, clip: ClipEncoder, outdir, options: BuildOptions = BuildOptions(),
                          hint: str = "", reporter: Reporter = SILENT,
                          stop: Callable[[], bool] | None = None) -> dict:
    """Write the S statistics and delta_i_c files for `generator` into `outdir` (official names and layouts,
    plus `clip_directions.json`, the settings they were built with); resumes a build interrupted there, and
    does nothing when the same build is already complete. `stop()` is polled between chunks (a StopRequest).
    Returns a summary: status (done, interrupted or skipped), paths, channel counts, seconds per channel."""
    outdir = check_writable(outdir)
    strength = options.strength if options.strength is not None else default_strength(hint)
    delta_path, stats_path = (outdir / name for name in FILE_NAMES[generator.kind])
    partial = outdir / f"{delta_path.name}.partial"
    settings = _settings_record(generator, clip, options, strength)
    summary = {"status": "done", "delta_i_c": str(delta_path), "s_stats": str(stats_path), "samples": options.samples,
               "strength": strength}
    if partial.is_dir():
        _check_same(_read_json(partial / "settings.json"), settings, partial)
        _done_rows(partial)  # a damaged chunk fails here, before any work
    elif (delta_path.is_file() and stats_path.is_file() and (outdir / RECORD).is_file()
          and _read_json(outdir / RECORD) == settings):
        return {**summary, "status": "skipped"}
    stats = s_statistics(generator, options.stats_samples, options.seed, options.truncation_psi,
                         options.truncation_cutoff, reporter=reporter)
    save_s_stats(stats_path, stats)
    partial.mkdir(parents=True, exist_ok=True)
    write_json(settings, partial / "settings.json")
    channels = direction_channels(generator, stats)
    first, built, seconds = _build_rows(generator, clip, stats, channels, options, strength, partial, reporter, stop)
    summary.update(channels=len(channels), seconds=seconds, seconds_per_channel=seconds / built if built else None)
    if first + built < len(channels):
        return {**summary, "status": "interrupted", "delta_i_c": None, "partial": str(partial),
                "channels_done": first + built}
    rows = np.concatenate([np.load(path) for _, _, path in _done_rows(partial)])
    if rows.shape[0] != len(channels):
        raise SgtoolError(f"{partial} is incomplete ({rows.shape[0]} of {len(channels)} rows); delete it and "
                          "build again")
    save_delta_i_c(delta_path, rows)
    write_json(settings, outdir / RECORD)
    shutil.rmtree(partial)
    return summary


def run_styleclip(settings: StyleclipDirectionsSettings, reporter: Reporter = SILENT, generator=None) -> dict:
    """The StyleCLIP pair for settings.network (or `generator`) in OUTDIR: resumable, and Ctrl-C stops between
    chunks of channels, keeping what is done (exit code 130 in the summary)."""
    clip = load_clip(settings.clip_weights, clip_model(settings.clip))  # a missing CLIP file fails before the generator
    if generator is None:
        generator = load_generator(settings.network, device=resolve_device(settings.device))
    clip = ClipEncoder(clip.model.to(device_of(generator)), clip.tokenizer)
    options = BuildOptions(samples=settings.samples, stats_samples=settings.stats_samples,
                           strength=settings.strength, batch_size=settings.batch_size)
    with StopRequest(reporter).installed() as stop:
        summary = build_clip_directions(generator, clip, settings.outdir, options,
                                        generator_hint(settings.network, generator), reporter, stop)
    return {**summary, "exit_code": 130 if summary["status"] == "interrupted" else 0}


def _build_rows(generator, clip, stats, channels, options, strength, partial, reporter, stop):
    """Rows from the first channel not saved yet, one chunk file each: (first channel, channels built, seconds)."""
    base_ws = torch.cat(list(sample_ws(generator, options.samples, options.seed, options.truncation_psi,
                                       options.truncation_cutoff)))
    base = w_to_s(generator, base_ws)
    done = _done_rows(partial)
    first = done[-1][1] if done else 0
    if first:
        reporter.note(f"resuming the build in {partial} at channel {first} of {len(channels)}")
    reporter.start(f"CLIP directions (resuming at channel {first})" if first else "CLIP directions",
                   total=len(channels) - first)
    began, built = time.perf_counter(), 0
    for start in range(first, len(channels), options.chunk_channels):
        chunk = channels[start:start + options.chunk_channels]
        features = channel_features(generator, clip, base, stats, chunk, strength, options.batch_size)
        save_npy(delta_rows(features), partial / f"rows_{start:06d}_{start + len(chunk):06d}.npy")
        built += len(chunk)
        reporter.advance(len(chunk), f"{chunk[-1].layer}:{chunk[-1].index}")
        if stop is not None and stop():
            break
    reporter.finish()
    return first, built, time.perf_counter() - began


def _check_same(recorded: dict, settings: dict, partial: Path) -> None:
    if recorded != settings:
        changed = sorted(k for k in set(recorded) | set(settings) if recorded.get(k) != settings.get(k))
        raise SgtoolError(f"{partial} holds a build started with other settings ({', '.join(changed)} differ); "
                          "run with the same settings to resume, or delete it to start over")


def _read_json(path: Path) -> dict:
    try:
        return read_json(path)
    except (OSError, ValueError):
        raise SgtoolError(f"{path} is not readable JSON; delete it to start the build over") from None
