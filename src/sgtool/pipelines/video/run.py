"""`sgtool video` as a library call: the clip stages, then render + paste + encode, then the published outputs.

    summary = run_video("clip.mp4", VideoSettings(encoder="restyle_e4e_ffhq.pt", edits=["age=+2"]))

Only this run writes the top-level outputs of OUTDIR (alignment.json, latents.npy, the videos,
tuned_generator.safetensors, video.json); the stages' own results stay in OUTDIR/cache.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from ...device import resolve_device
from ...progress import SILENT, Reporter
from ...settings import VideoSettings
from ...utils.io import write_json
from ...utils.records import read_json
from ..edit.texts import encode_prompts
from ..shared.batch import settings_differences
from ..shared.smoothing import jitter
from .cache import publish
from .clip import Clip, ClipModels, run_stages
from .edits import ClipEdits
from .quads import quad_params
from .render import render_stage
from .stages import CLIP_STAGES, LATENTS_LAYOUT


def run_video(source, settings: VideoSettings, reporter: Reporter = SILENT, finder=None, lpips_model=None) -> dict:
    """Run every stage for `source` into `settings.outdir` and return the video.json summary."""
    start = time.perf_counter()
    prompts = encode_prompts(settings)  # CLIP and direction files fail before the generator loads
    models = ClipModels(settings.encoder, settings.network, resolve_device(settings.device))
    clip = Clip(source, settings.outdir, settings, models, reporter, finder, lpips_model)
    # Loading the models and resolving the edits first: a bad checkpoint or direction fails before any decoding.
    edits = ClipEdits(models.generator, settings, settings.edit_ramp, clip.fps, models.name, prompts)
    _set_aside_earlier_outputs(Path(settings.outdir), settings, reporter)
    products = run_stages(clip, (*CLIP_STAGES, render_stage(settings, edits)))
    outdir = Path(settings.outdir)
    cache = clip.cache.root
    alignment = publish(cache / "align" / clip.keys["align"] / "alignment.json", outdir / "alignment.json")
    latents = publish(cache / "smooth" / clip.keys["smooth"] / "latents.npy", outdir / "latents.npy")
    outputs = dict(products["render"]["outputs"])
    if "tune" in clip.keys:
        outputs["tuned_generator"] = str(publish(cache / "tune" / clip.keys["tune"] / "tuned_generator.safetensors",
                                                 outdir / "tuned_generator.safetensors"))
    track, aligned = products["track"], products["align"]
    raw, smoothed = products["invert"], products["smooth"]
    frames = clip.frame_count
    summary = {
        "source": clip.info.record(), "outdir": str(outdir), "frames": frames, "fps": float(clip.fps),
        "fps_rational": f"{clip.fps.numerator}/{clip.fps.denominator}", "duration": frames / float(clip.fps),
        "frame_size": [track.width, track.height], "crop_size": clip.crop_size,
        "frames_without_face": [int(t) for t in np.flatnonzero(~aligned.found)],
        "quad_jitter": {"raw": jitter(np.stack([quad_params(q) for q in aligned.quad_raw])),
                        "smoothed": jitter(np.stack([quad_params(q) for q in aligned.quad]))},
        "latent_jitter": {"raw": jitter(np.asarray(raw).reshape(frames, -1)),
                          "smoothed": jitter(np.asarray(smoothed).reshape(frames, -1))},
        **edits.records(), "tuned": "tune" in clip.keys, "audio": products["render"]["audio"],
        "outputs": outputs, "alignment": str(alignment), "latents": str(latents), "latents_layout": LATENTS_LAYOUT,
        "stages": clip.stages, "cache": clip.keys, "seconds": round(time.perf_counter() - start, 3),
        "settings": settings.record(), "encoder": models.encoder, "network": models.network,
    }
    write_json(summary, outdir / "video.json")
    return summary


# Settings that leave the published outputs as they were: a run differing only in these may replace them.
SAME_OUTPUTS = ("device", "kernels", "force", "batch_size")


def _set_aside_earlier_outputs(outdir: Path, settings: VideoSettings, reporter: Reporter) -> None:
    """A run with other settings (another edit of the clip, which reuses its cached stages) publishes new videos
    into OUTDIR: the earlier run's are moved to OUTDIR/earlier/<when it ran>/ first, and a line says so."""
    record = outdir / "video.json"
    try:
        earlier = read_json(record)
        before, outputs = earlier["settings"], earlier["outputs"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    if not isinstance(outputs, dict) or not settings_differences(before, settings.record(), SAME_OUTPUTS):
        return  # the same run again: the same outputs
    folder = outdir / "earlier" / time.strftime("%Y%m%d-%H%M%S", time.localtime(record.stat().st_mtime))
    folder.mkdir(parents=True, exist_ok=True)
    for path in [*map(Path, outputs.values()), record, outdir / "alignment.json", outdir / "latents.npy"]:
        if path.is_file() and path.parent.resolve() == outdir.resolve():
            shutil.move(str(path), folder / path.name)
    reporter.note(f"{outdir} held the outputs of a run with other settings; they are now in {folder}")
