"""Edits of feature-space inversions (StyleFeatureEditor): any edit sgtool makes (InterFaceGAN directions, StyleSpace
channels, StyleCLIP text edits, each swept or not) carried into the inversion's feature tensor F by SFE's editor.

The editor reads F and the change the same edit makes to the e4e code's own feature at F's layer (unedited minus
edited, as SFE measures it); the edited image renders the edited code (W+, or S when a style or text edit
moves) with the editor's F' in place of that layer's activation.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ...editing.stylespace import synthesize_s
from ...models.encoders.sfe import SavedFeatures
from ...models.encoders.sfe_layers import FeatureLayer, generator_feature, layer_key, render_with_feature
from .requests import EditRequest


def code_feature(generator, code, layer: FeatureLayer) -> torch.Tensor:
    """The activation at `layer` of a W+ or S code."""
    if isinstance(code, Mapping):
        return synthesize_s(generator, code, stop_at=layer_key(generator, layer))
    return generator_feature(generator, code, layer)


def render_code_with_feature(generator, code, feature: torch.Tensor, layer: FeatureLayer) -> torch.Tensor:
    if isinstance(code, Mapping):
        return synthesize_s(generator, code, replace={layer_key(generator, layer): feature})
    return render_with_feature(generator, code, feature, layer)


@torch.no_grad()
def feature_edit(editor, generator, saved: SavedFeatures, ws: torch.Tensor, request: EditRequest):
    """(the edited image [1, 3, R, R], the edited code, F') of one inversion ([1, num_ws, w_dim] codes)."""
    code = request.edit(generator, ws)
    e4e = saved.e4e_latent[None].to(ws)
    delta = generator_feature(generator, e4e, saved.layer) - code_feature(generator, request.edit(generator, e4e),
                                                                          saved.layer)
    feature = editor.edit_feature(saved.fused[None].to(ws), delta)
    return render_code_with_feature(generator, code, feature, saved.layer), code, feature
