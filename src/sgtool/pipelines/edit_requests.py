"""What an edit run does to every latent, resolved before anything renders.

`prepare_edits(generator, options)` (edit, video, expand-fov) turns `--edit NAME=STRENGTH` and
`--direction NAME=FILE` into loaded directions, checks `--layers` and the direction shapes against
the generator and returns an `EditRequest`; `prepare_request(generator, settings)` adds what only
`sgtool edit` has: StyleSpace channel edits and a sweep. Bad input fails here, with nothing written.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch

from ..editing.directions import (
    DirectionRegistry,
    Edit,
    apply_edits,
    edit_label,
    parse_edit,
    parse_named_file,
    parse_sweep,
    resolve_direction,
)
from ..editing.stylespace import (
    StyleEdit,
    apply_style_edits,
    capture_styles,
    parse_style,
    render_styles,
    resolve_style_edit,
    style_layers,
    style_std,
)
from ..errors import SgtoolError
from ..settings import EditOptions, EditSettings
from .render import as_transform, render


@dataclass
class EditRequest:
    """The resolved edits: `edits` carry their loaded directions; `apply(ws)` moves W+ codes."""

    edits: list[Edit] = field(default_factory=list)
    layers: list[int] | None = None
    mode: str = "auto"
    direction_set: str | None = None  # the registry set named directions came from
    style_edits: list[StyleEdit] = field(default_factory=list)
    sweep_name: str | None = None
    sweep_strengths: np.ndarray | None = None
    sweep_direction: Edit | None = None  # direction sweeps
    sweep_style: StyleEdit | None = None  # style-channel sweeps (LAYER:CHANNEL)
    style_scale: list[torch.Tensor] | None = None  # per-channel unit of style edits (std); None: raw values
    noise_mode: str = "const"

    @property
    def label(self) -> str:
        """'age+2_s3c4+1.5': the part of output names that says what was done."""
        return edit_label(list(self.edits) + list(self.style_edits))

    def apply(self, ws, scale: float = 1.0):
        """W+ codes ([num_ws, w_dim] or [N, num_ws, w_dim]) with the direction edits applied (`scale` x strengths)."""
        edits = self.edits if scale == 1.0 else [replace(e, strength=e.strength * scale) for e in self.edits]
        return apply_edits(ws, edits, self.layers, self.mode)

    def records(self) -> dict:
        """The edits as written in a run's summary: names, strengths and the direction files used."""
        units = "std" if self.style_scale is not None else "raw"
        return {"edits": [{"name": e.name, "strength": e.strength, "direction": e.source} for e in self.edits],
                "style_edits": [{"layer": e.index, "channel": e.channel, "strength": e.strength, "units": units}
                                for e in self.style_edits]}


def check_layers(generator, layers: Sequence[int] | None) -> None:
    bad = [i for i in layers or () if not 0 <= i < generator.num_ws]
    if bad:
        raise SgtoolError(f"--layers {bad[0]} is out of range: this generator has style inputs "
                          f"0-{generator.num_ws - 1}")


def prepare_edits(generator, options: EditOptions, hint: str = "") -> EditRequest:
    """Resolve `options.edits` (directions from `--direction` files, else the registry set matching the
    generator and `hint`, see `generator_hint`) and check layers and shapes; nothing renders."""
    return _prepare(generator, options, hint)


def prepare_request(generator, settings: EditSettings, hint: str = "") -> EditRequest:
    """`prepare_edits` plus `sgtool edit`'s StyleSpace edits and sweep."""
    sweep = parse_sweep(settings.sweep) if settings.sweep else None
    swept_direction = sweep[0] if sweep and ":" not in sweep[0] else None
    if swept_direction in {parse_edit(text).name for text in settings.edits}:
        raise SgtoolError(f"--sweep {swept_direction} also appears in --edit; sweep it or edit it, not both")
    request = _prepare(generator, settings, hint, swept_direction)
    request.noise_mode = settings.noise_mode
    layers = style_layers(generator)
    request.style_edits = [resolve_style_edit(parse_style(text), layers) for text in settings.styles]
    if sweep:
        request.sweep_name, request.sweep_strengths = sweep
        if swept_direction is None:
            request.sweep_style = resolve_style_edit(parse_style(f"{sweep[0]}=0"), layers)
    if settings.style_units == "std" and (request.style_edits or request.sweep_style):
        request.style_scale = style_std(generator, settings.style_std_samples)
    return request


def _prepare(generator, options: EditOptions, hint: str, swept_direction: str | None = None) -> EditRequest:
    check_layers(generator, options.layers)
    registry = DirectionRegistry.from_settings(options)
    files = dict(parse_named_file(text) for text in options.directions)

    def resolve(edit: Edit) -> Edit:
        direction, path = resolve_direction(edit.name, generator, registry, files, hint)
        return replace(edit, direction=direction, source=str(path))

    request = EditRequest(edits=[resolve(parse_edit(text)) for text in options.edits], layers=options.layers,
                          mode=options.mode, direction_set=registry.set_for(generator, hint))
    if swept_direction is not None:
        request.sweep_direction = resolve(Edit(swept_direction, 0.0))
    # Shapes against the mode and the generator, before any rendering starts.
    probe = torch.zeros([generator.num_ws, generator.w_dim])
    checks = request.edits + ([request.sweep_direction] if request.sweep_direction else [])
    apply_edits(probe, [replace(e, strength=1.0) for e in checks], options.layers, options.mode)
    return request


@torch.no_grad()
def edit_and_render(generator, ws: torch.Tensor, edits: Sequence[Edit], style_edits: Sequence[StyleEdit],
                    request: EditRequest, transform=None):
    """ws [N, num_ws, w_dim] -> (images [N, C, R, R], edited ws, edited styles or None when no style edit moves)."""
    edited = apply_edits(ws, edits, request.layers, request.mode)
    if not any(e.strength != 0 for e in style_edits):
        return render(generator, edited, transform, request.noise_mode), edited, None
    transform = as_transform(generator, transform)
    styles, _ = capture_styles(generator, edited, transform, request.noise_mode)
    styles = apply_style_edits(styles, style_edits, request.style_scale)
    return render_styles(generator, styles, transform, request.noise_mode), edited, styles
