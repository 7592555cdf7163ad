"""`sgtool expand-fov` on a clip: the clip stages, then every frame's smoothed latent rendered on a wider
canvas through its landmarks transform (edits faded in as in `sgtool video`) into fov.mp4 with the audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...device import resolve_device
from ...errors import SgtoolError
from ...progress import SILENT, Reporter
from ...settings import ClipOptions, ExpandFovSettings
from ...utils.io import to_uint8, write_json
from ...utils.records import read_json
from ..edit.texts import encode_prompts
from .tiles import Margins, expand_fov, require_stylegan3
from ..video.clip import Clip, ClipModels, Stage, run_stages
from ..video.edits import ClipEdits
from ..video.encode import ClipVideos
from ..video.stages import CLIP_STAGES, renderer


def fov_stage(settings: ExpandFovSettings, margins: Margins, edits: ClipEdits) -> Stage:
    def compute(clip: Clip, entry, products: dict) -> dict:
        generator = renderer(clip, products)
        latents, alignment = products["smooth"], products["align"]
        resolution = generator.img_resolution
        size = (resolution + margins.left + margins.right, resolution + margins.top + margins.bottom)
        device = next(generator.parameters()).device
        with ClipVideos(clip, {"fov": size}, ("fov",)) as videos:
            clip.reporter.start("expand frames", clip.frame_count)
            for t in range(clip.frame_count):
                ws = torch.from_numpy(np.array(latents[t:t + 1], dtype=np.float32)).to(device)
                base = torch.from_numpy(alignment.inverse_transform[t].astype(np.float32))
                canvas, _ = expand_fov(generator, edits.edit(generator, ws, [t]), margins, base, settings.overlap,
                                       settings.feather)
                videos.write("fov", to_uint8(canvas))
                clip.reporter.advance()
            clip.reporter.finish()
            audio = videos.close()
        clip.note(audio=audio)
        return {"video": videos.outputs()["fov"], "size": list(size), "audio": audio}

    return Stage("fov", compute)


def clip_options(settings: ExpandFovSettings, reporter: Reporter) -> tuple[ClipOptions, str | None]:
    """The `video` section; left at its defaults, the clip settings a `sgtool video` run recorded in the
    output folder (so its cached stages are reused instead of computed again with other settings)."""
    record = Path(settings.outdir) / "video.json"
    if settings.video != ClipOptions() or not record.is_file():
        return settings.video, None
    try:
        recorded = read_json(record)["settings"]
        adopted = ClipOptions.model_validate({name: recorded[name] for name in ClipOptions.model_fields
                                              if name in recorded and name != "force"})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SgtoolError(f"{record} cannot be read as a `sgtool video` record ({exc}); set the clip settings "
                          "with --set video.KEY=VALUE or remove it") from None
    reporter.warn(f"using the clip settings of the `sgtool video` run recorded in {record} (start, fps, size, "
                  "smoothing...); set any video.* setting to choose others")
    return adopted, str(record)


def expand_video(source, settings: ExpandFovSettings, reporter: Reporter = SILENT, finder=None) -> dict:
    """Expand every frame of a clip into OUTDIR/fov.mp4; returns the record written to expand_fov_video.json.

    The clip stages come from (or go into) the same stage cache as `sgtool video` in OUTDIR.
    """
    margins = Margins(*settings.margins())
    if margins == Margins():
        raise SgtoolError("nothing to expand: give --left/--right/--top/--bottom or --all in pixels")
    options, adopted = clip_options(settings, reporter)
    prompts = encode_prompts(settings)
    models = ClipModels(settings.encoder, settings.network, resolve_device(settings.device))
    require_stylegan3(models.generator)
    margins.check(models.generator.img_resolution)
    clip = Clip(source, settings.outdir, options, models, reporter, finder)
    edits = ClipEdits(models.generator, settings, 0.0, clip.fps, models.name, prompts)  # edits at full strength
    products = run_stages(clip, (*CLIP_STAGES, fov_stage(settings, margins, edits)))
    fov = products["fov"]
    record = {"source": str(clip.source), "video": fov["video"], "frames": clip.frame_count, "fps": float(clip.fps),
              "size": fov["size"], "margins": vars(margins), "audio": fov["audio"], **edits.records(),
              "stages": clip.stages, "cache": clip.keys, "clip_settings": options.record(),
              "clip_settings_from": adopted, "settings": settings.record()}
    write_json(record, Path(settings.outdir) / "expand_fov_video.json")
    return record
