"""`sgtool expand-fov` as a library: render beyond the original frame with StyleGAN3's input translation.

    canvas, tiles = expand_fov(G, ws, Margins(left=64, right=64))               # one code, uint8 canvas
    summary = run_expand_fov(["lat.npy"], ExpandFovSettings(network="G.pkl", all=64, outdir="out/fov"))

Modules: tiles (windows and blending), run (latents and photos, the batch), video (a clip's frames).
"""

from .run import run_expand_fov
from .tiles import Margins, Tile, blend_tiles, expand_fov, plan_tiles, require_stylegan3, translation_matrix
from .video import expand_video

__all__ = ["Margins", "Tile", "blend_tiles", "expand_fov", "expand_video", "plan_tiles", "require_stylegan3",
           "run_expand_fov", "translation_matrix"]
