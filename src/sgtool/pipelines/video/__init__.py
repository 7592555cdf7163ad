"""`sgtool video` (and `sgtool expand-fov` on a clip) as a library: a declared list of stages over one
stage cache in the output folder.

    from sgtool.pipelines.video import run_video
    summary = run_video("clip.mp4", VideoSettings(encoder="restyle_e4e_ffhq.pt", edits=["age=+2"], outdir="out"))

    clip = Clip("clip.mp4", "out", ClipOptions(size=256), ClipModels("restyle_e4e_ffhq.pt"))
    products = run_stages(clip, CLIP_STAGES)    # track, align, invert, smooth (tune with tune_frames)
    products["smooth"]                           # [T, num_ws, w_dim] smoothed latents (memory-mapped)

Modules: clip (the run, `Stage`, `run_stages`), cache (the stage cache), tracking, quads (face quads
over time), stages (the shared clip stages), edits (edit ramp), render / stitch / encode (the video's
last stage), run (`run_video`). expand-fov's last stage for clips is `pipelines.fov.video`.
"""

from ...settings import ClipOptions, VideoSettings
from ...settings.video import VIDEO_OUTPUTS as OUTPUTS
from .clip import Clip, ClipModels, Stage, run_stages
from .edits import ClipEdits, ramp_factors
from .quads import fill_missing, nearest_found, quad_from_params, quad_global, quad_local, quad_params
from .render import render_stage
from .run import run_video
from .stages import ALIGN, CLIP_STAGES, INVERT, NOT_KEYED, SMOOTH, TRACK, TUNE, Alignment
from .tracking import FaceTracker, Track

__all__ = [
    "ALIGN", "CLIP_STAGES", "INVERT", "NOT_KEYED", "OUTPUTS", "SMOOTH", "TRACK", "TUNE", "Alignment", "Clip",
    "ClipEdits", "ClipModels", "ClipOptions", "FaceTracker", "Stage", "Track", "VideoSettings",
    "fill_missing", "nearest_found", "quad_from_params", "quad_global", "quad_local", "quad_params", "ramp_factors",
    "render_stage", "run_stages", "run_video",
]
