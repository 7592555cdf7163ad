"""`sgtool edit` as a library: apply InterFaceGAN, StyleSpace and StyleCLIP edits to latents or whole photos.

    settings = EditSettings(network="stylegan3-r-ffhq-1024x1024.pkl", edits=["age=+2"], outdir="out/edit")
    summary = run_edit(plan_edit(["out/invert/photo_latent.npy"], settings))   # what `sgtool edit` does

    request = prepare_edits(G, EditOptions(edits=["age=+2"]), generator_hint(network, G))  # in your own loop
    image = render(G, request.apply(ws), transform=inverse_transform)

Modules: run (plans and latent files), requests (edits resolved against a generator), texts (StyleCLIP prompts),
sweeps (strength grids and animations), photo (every face of a photo edited and pasted back).
"""

from ...editing.directions import generator_hint
from ...settings import EditOptions, EditSettings
from ..shared.images import labelled_grid
from ..shared.render import render
from .requests import EditRequest, edit_and_render, prepare_edits, prepare_request
from .run import EditPlan, edit_latents, output_stem, plan_edit, random_weights_warning, run_edit

__all__ = ["EditOptions", "EditPlan", "EditRequest", "EditSettings", "edit_and_render", "edit_latents",
           "generator_hint", "labelled_grid", "output_stem", "plan_edit", "prepare_edits", "prepare_request",
           "random_weights_warning", "render", "run_edit"]
