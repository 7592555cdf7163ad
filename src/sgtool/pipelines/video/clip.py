"""A clip run: the source, its settings, its models, its stage cache, and the runner of a list of stages.

A stage is declared once (`Stage`) with the settings its results depend on; `run_stages` computes
each one's cache key from them, reuses a finished entry, resumes an interrupted one, and records
how long each stage took. `sgtool video` and `sgtool expand-fov` on a clip run the same clip stages
(track, align, invert, smooth, tune) and add their own last stage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from ...errors import SgtoolError
from ...progress import SILENT, Reporter
from ...settings import ClipOptions
from ..shared.video_io import VideoInfo, decode_frames, probe
from ...utils.io import digest, file_identity
from .cache import CACHE_VERSION, StageCache, StageEntry


def default_fine_layers(num_ws: int) -> list[int]:
    """stylegan3-editing's fine layers, style inputs 9 and up of 16; the same share of other generators."""
    return list(range(round(num_ws * 9 / 16), num_ws))


class ClipModels:
    """The encoder and the generator of a clip run, loaded on first use.

    Names are resolved at once (a registry name that is not in the cache fails here, before any
    work); the resolved files' identity is part of the inversion's cache key.
    """

    def __init__(self, encoder, network=None, device="cpu"):
        from ...hub import resolve_reference

        if encoder is None:
            raise SgtoolError("--encoder is required: pass a ReStyle encoder checkpoint or registry name, such as "
                              "restyle-e4e-sg3-ffhq")
        self.encoder = resolve_reference(encoder, kind="encoder")
        self.network = resolve_reference(network, kind="generator") if network is not None else None
        self.device = torch.device(device)
        self._loaded = None

    def _load(self):
        if self._loaded is None:
            from ..invert.run import load_models

            self._loaded = load_models(self.encoder, self.network, self.device,
                                       need="video (stabilised crops, smoothed over time)")
        return self._loaded

    @property
    def inverter(self):
        return self._load()[0]

    @property
    def generator(self):
        return self._load()[1]

    @property
    def name(self) -> str:
        """What the generator is called (direction sets are chosen by it)."""
        return str(self.network or self.encoder)

    def identity(self) -> dict:
        network = self.network
        return {"encoder": file_identity(self.encoder),
                "network": file_identity(network) if network is not None and Path(network).is_file() else network}


@dataclass(frozen=True)
class Stage:
    """One step over a clip.

    `keyed_by`: the ClipOptions fields its results depend on; with `identity(clip)` (the files it
    reads) and the previous cached stage's key they make its cache key. `compute(clip, entry,
    products)` makes the stage's product, writing its files into `entry`; `load(clip, entry,
    products)` reads a finished entry back. A stage without `load` is not cached (entry None) and
    runs every time; one whose `active(options)` is false is left out.
    """

    name: str
    compute: Callable
    load: Callable | None = None
    keyed_by: tuple[str, ...] = ()
    identity: Callable[["Clip"], dict] | None = None
    active: Callable[[ClipOptions], bool] = lambda options: True


class Clip:
    """One clip into one output folder; see the module docstring."""

    def __init__(self, source, outdir, options: ClipOptions, models: ClipModels | None = None,
                 reporter: Reporter = SILENT, finder=None, lpips_model=None):
        self.source = Path(source)
        self.outdir = Path(outdir)
        self.options = options
        self.models = models
        self.reporter = reporter
        self.finder = finder
        self.lpips_model = lpips_model
        self.info: VideoInfo = probe(self.source)
        self.fps: Fraction = Fraction(options.fps).limit_denominator(1001) if options.fps else self.info.fps
        self.cache = StageCache(self.outdir, options.force)
        self.frame_count: int | None = None  # known once the clip is tracked
        self.stages: dict[str, dict] = {}
        self.keys: dict[str, str] = {}
        self._notes: dict = {}

    def frames(self) -> Iterator[np.ndarray]:
        """The clip's frames (decoded again on every call, one at a time); a variable frame rate clip is
        resampled to its base rate, so that every decoding yields the same frames, evenly spaced."""
        o = self.options
        resample = o.fps or self.info.variable_fps
        return decode_frames(self.source, o.start, o.end, o.max_frames, self.fps if resample else None)

    def require_models(self, what: str) -> ClipModels:
        if self.models is None:
            raise SgtoolError(f"{what} needs the encoder: pass --encoder")
        return self.models

    @property
    def crop_size(self) -> int:
        if self.options.size:
            return int(self.options.size)
        return int(self.require_models("--size null (the generator's resolution)").generator.img_resolution)

    def fine_layers(self) -> list[int]:
        num_ws = self.require_models("freeze_fine").generator.num_ws
        layers = self.options.fine_layers
        if layers is None:
            return default_fine_layers(num_ws)
        bad = [i for i in layers if not 0 <= i < num_ws]
        if bad:
            raise SgtoolError(f"fine_layers {bad[0]} is out of range: this generator has style inputs 0-{num_ws - 1}")
        return list(layers)

    def encoder_steps(self) -> int:
        steps = self.options.encoder_steps
        return int(steps) if steps is not None else int(self.require_models("inversion").inverter.default_steps)

    def key_value(self, name: str):
        """A setting as it enters a cache key: defaults that depend on the models resolved."""
        if name == "size":
            return self.crop_size
        if name == "fine_layers":
            return self.fine_layers() if self.options.freeze_fine else None
        if name == "encoder_steps":
            return self.encoder_steps()
        value = getattr(self.options, name)
        return value.model_dump(mode="json") if hasattr(value, "model_dump") else value

    def note(self, **info) -> None:
        """Facts about the running stage for its record in the summary (resumed frames, steps...)."""
        self._notes.update(info)

    def record_stage(self, name: str, seconds: float, cached: bool) -> None:
        frames = self._notes.pop("frames", self.frame_count)
        rate = frames / seconds if frames and seconds > 0 and not cached else None
        self.stages[name] = {"seconds": round(seconds, 3), "cached": cached, "frames": frames,
                             "frames_per_second": round(rate, 3) if rate else None, **self._notes}
        self._notes = {}


def run_stages(clip: Clip, stages: Sequence[Stage]) -> dict:
    """Run `stages` in order; returns each one's product by name."""
    products: dict = {}
    after = None
    for stage in stages:
        if not stage.active(clip.options):
            continue
        start = time.perf_counter()
        cached = False
        if stage.load is None:
            products[stage.name] = stage.compute(clip, None, products)
        else:
            settings = {name: clip.key_value(name) for name in stage.keyed_by}
            key = digest({"version": CACHE_VERSION, "stage": stage.name, "after": after, "settings": settings,
                          "files": stage.identity(clip) if stage.identity else None})
            entry = clip.cache.entry(stage.name, key)
            cached = entry.done
            if cached or entry.resuming:
                clip.reporter.note(f"{stage.name}: {'reused from' if cached else 'resuming in'} {entry.dir}")
            products[stage.name] = stage.load(clip, entry, products) if cached else \
                _compute(stage, clip, entry, products, settings, after)
            clip.keys[stage.name] = after = key
        clip.record_stage(stage.name, time.perf_counter() - start, cached)
    return products


def _compute(stage: Stage, clip: Clip, entry: StageEntry, products: dict, settings: dict, after: str | None):
    entry.open(settings, after)
    product = stage.compute(clip, entry, products)
    entry.finish()
    return product

