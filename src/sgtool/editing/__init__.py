"""Latent editing: InterFaceGAN-style directions, StyleSpace channels, SeFa discovery, boundary training."""

from .boundary import Boundary, read_scores_csv, train_boundary
from .directions import (
    DirectionRegistry,
    Edit,
    apply_edits,
    edit_label,
    format_strength,
    load_direction,
    parse_edit,
    parse_sweep,
    resolve_direction,
)
from .sefa import sefa_directions
from .stylespace import (
    StyleEdit,
    apply_style_edits,
    capture_styles,
    parse_style,
    render_styles,
    resolve_style_edit,
    style_layers,
    style_std,
)

__all__ = [
    "Boundary", "DirectionRegistry", "Edit", "StyleEdit", "apply_edits", "apply_style_edits", "capture_styles",
    "edit_label", "format_strength", "load_direction", "parse_edit", "parse_style", "parse_sweep",
    "read_scores_csv", "render_styles", "resolve_direction", "resolve_style_edit", "sefa_directions",
    "style_layers", "style_std", "train_boundary",
]
