"""`sgtool invert` as a library: photos -> W+ latents by encoder (ReStyle, pSp, e4e, HyperStyle), projection or
both (hybrid).

    enc = load_encoder("restyle_pSp_ffhq.pt")              # decoder from the checkpoint
    steps = enc.invert(x, steps=3, transform=None)          # x [B, 3, 256, 256] in [-1, 1]
    steps[-1].latents, steps[-1].images                     # [B, num_ws, w_dim], [B, 3, 256, 256]
    result = invert_target(target, "hybrid", encoder=enc)   # one image, any method
    summary = invert_batch(["photos/"], InvertSettings(encoder="restyle_pSp_ffhq.pt", outdir="out/"))

Modules: run (encoders, methods, batches), project (the optimisation behind optimize and hybrid).
"""

from ..shared.images import ENCODER_SIZE, encoder_input
from ..shared.render import render
from .project import project, w_statistics
from .run import Inversion, invert_batch, invert_target, load_encoder, load_models

__all__ = ["ENCODER_SIZE", "Inversion", "encoder_input", "invert_batch", "invert_target", "load_encoder",
           "load_models", "project", "render", "w_statistics"]
