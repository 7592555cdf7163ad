"""What an edit run does to every latent, resolved before anything renders.

`prepare_edits(generator, options)` (edit, video, expand-fov) turns `--edit NAME=STRENGTH` and
`--direction NAME=FILE` into loaded directions, `--text PROMPT` into StyleSpace directions
(`texts.py`), checks `--layers` and the direction shapes against the generator and returns an
`EditRequest`; `prepare_request(generator, settings)` adds what only `sgtool edit` has: StyleSpace
channel edits and a sweep. Bad input fails here, with nothing written.

`request.edit(generator, ws)` gives the edited code: W+ while every edit is a W+ edit, S (a dict, see
`stylespace.w_to_s`) once a style-channel or text edit moves; `render.render` draws either.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ...editing.directions import (
    DirectionRegistry,
    Edit,
    apply_edits,
    edit_label,
    parse_edit,
    parse_named_file,
    parse_sweep,
    resolve_direction,
)
from ...editing.styleclip import parse_text_edit
from ...editing.stylespace import (
    StyleEdit,
    apply_style_edits,
    as_dict,
    as_list,
    parse_style,
    resolve_style_edit,
    style_layers,
    style_std,
    w_to_s,
)
from ...errors import SgtoolError
from ...settings import EditOptions, EditSettings
from .texts import TextEdits, TextPrompts, prepare_texts
from ..shared.render import check_layers, render

TEXT_SWEEPS = ("alpha", "beta")  # --sweep alpha=... / beta=... vary the text edits


@dataclass
class EditRequest:
    """The resolved edits: `edits` carry their loaded directions, `texts` their StyleSpace directions."""

    edits: list[Edit] = field(default_factory=list)
    layers: list[int] | None = None
    mode: str = "auto"
    direction_set: str | None = None  # the registry set named directions came from
    style_edits: list[StyleEdit] = field(default_factory=list)
    texts: TextEdits | None = None
    sweep_name: str | None = None
    sweep_strengths: np.ndarray | None = None
    sweep_direction: Edit | None = None  # direction sweeps
    sweep_style: StyleEdit | None = None  # style-channel sweeps (LAYER:CHANNEL)
    style_scale: list[torch.Tensor] | None = None  # per-channel unit of style edits (std); None: raw values
    noise_mode: str = "const"

    @property
    def label(self) -> str:
        """'age+2_s3c4+1.5_a_smiling_face+4': the part of output names that says what was done."""
        return self._label()

    @property
    def sweep_label(self) -> str:
        """The label without what the sweep varies (a text sweep's alpha or beta)."""
        return self._label(self.sweep_name if self.sweep_name in TEXT_SWEEPS else None)

    def _label(self, text_sweep: str | None = None) -> str:
        texts = [self.texts.label_for(text_sweep)] if self.texts is not None else []
        return "_".join(filter(None, [edit_label(list(self.edits) + list(self.style_edits)), *texts]))

    @property
    def moves_styles(self) -> bool:
        """Whether an edit needs S (a style channel or a text edit): W+ cannot express those."""
        return any(e.strength != 0 for e in self.style_edits) or (self.texts is not None and self.texts.moves)

    def apply(self, ws, scale: float = 1.0):
        """W+ codes ([num_ws, w_dim] or [N, num_ws, w_dim]) with the direction edits applied (`scale` x strengths)."""
        edits = self.edits if scale == 1.0 else [replace(e, strength=e.strength * scale) for e in self.edits]
        return apply_edits(ws, edits, self.layers, self.mode)

    def edit(self, generator, ws: torch.Tensor, factors: torch.Tensor | None = None):
        """ws [N, num_ws, w_dim] -> the edited codes: W+, or S when a style or text edit moves. `factors` [N]
        scale every edit per code (a video's fade-in)."""
        edited = self.apply(ws)
        if factors is not None:
            factors = factors.to(ws.device, ws.dtype)
            edited = ws + factors.view(-1, 1, 1) * (edited - ws)
        if not self.moves_styles:
            return edited
        styles = w_to_s(generator, edited)
        if self.style_edits:
            if factors is not None:
                raise SgtoolError("style-channel edits have no per-frame strength; use --edit or --text")
            styles = as_dict(generator, apply_style_edits(as_list(generator, styles), self.style_edits,
                                                          self.style_scale))
        return self.texts.apply(styles, factors) if self.texts is not None else styles

    def swept(self, strength: float) -> "EditRequest":
        """This request with the swept quantity at `strength`."""
        if self.sweep_name in TEXT_SWEEPS and self.sweep_direction is None and self.sweep_style is None:
            return replace(self, texts=self.texts.at(**{self.sweep_name: float(strength)}))
        if self.sweep_direction is not None:
            return replace(self, edits=[*self.edits, replace(self.sweep_direction, strength=float(strength))])
        return replace(self, style_edits=[*self.style_edits, replace(self.sweep_style, strength=float(strength))])

    def records(self) -> dict:
        """The edits as written in a run's summary: names, strengths and the direction files used."""
        units = "std" if self.style_scale is not None else "raw"
        return {"edits": [{"name": e.name, "strength": e.strength, "direction": e.source} for e in self.edits],
                "style_edits": [{"layer": e.index, "channel": e.channel, "strength": e.strength, "units": units}
                                for e in self.style_edits],
                "text_edits": self.texts.records() if self.texts is not None else []}


def prepare_edits(generator, options: EditOptions, hint: str = "", prompts: TextPrompts | None = None) -> EditRequest:
    """Resolve `options.edits` (directions from `--direction` files, else the registry set matching the
    generator and `hint`, see `generator_hint`) and the text edits (`prompts` from `encode_prompts`, else
    encoded here) and check layers and shapes; nothing renders."""
    request = _prepare(generator, options, hint)
    request.texts = prepare_texts(generator, options, hint, prompts)
    return request


def prepare_request(generator, settings: EditSettings, hint: str = "", prompts: TextPrompts | None = None) \
        -> EditRequest:
    """`prepare_edits` plus `sgtool edit`'s StyleSpace edits and sweep."""
    sweep = parse_sweep(settings.sweep) if settings.sweep else None
    text_sweep = sweep[0] if sweep and sweep[0] in TEXT_SWEEPS and settings.texts else None
    if sweep and sweep[0] in TEXT_SWEEPS and not settings.texts and sweep[0] not in dict(
            parse_named_file(text) for text in settings.directions):
        raise SgtoolError(f"--sweep {sweep[0]}=... varies text edits; add --text PROMPT")
    if text_sweep == "alpha" and all(parse_text_edit(text).alpha is not None for text in settings.texts):
        raise SgtoolError("--sweep alpha varies the --alpha of text edits without their own strength, and every "
                          "--text has one; drop =STRENGTH from the text to sweep")
    swept_direction = sweep[0] if sweep and ":" not in sweep[0] and text_sweep is None else None
    if swept_direction in {parse_edit(text).name for text in settings.edits}:
        raise SgtoolError(f"--sweep {swept_direction} also appears in --edit; sweep it or edit it, not both")
    request = _prepare(generator, settings, hint, swept_direction)
    request.texts = prepare_texts(generator, settings, hint, prompts, beta_swept=text_sweep == "beta")
    request.noise_mode = settings.noise_mode
    layers = style_layers(generator)
    request.style_edits = [resolve_style_edit(parse_style(text), layers) for text in settings.styles]
    if sweep:
        request.sweep_name, request.sweep_strengths = sweep
        if swept_direction is None and text_sweep is None:
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
def edit_and_render(generator, ws: torch.Tensor, request: EditRequest, transform=None):
    """ws [N, num_ws, w_dim] -> (images [N, C, R, R], the edited codes: W+, or S when a style or text edit moves)."""
    code = request.edit(generator, ws)
    return render(generator, code, transform, request.noise_mode), code
