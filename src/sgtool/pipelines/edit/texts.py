"""Text edits (`--text "a smiling face"`): StyleCLIP global directions in StyleSpace.

Two steps, so that a missing CLIP file or direction folder fails before a generator loads:
`encode_prompts(options)` reads CLIP and the templates and turns every prompt into its text direction
delta_i (CLIP is dropped afterwards); `prepare_texts(generator, options, hint, prompts)` finds the
generator's delta_i_c / s_stats pair (`--directions DIR` or the published one) and makes each
prompt's StyleSpace direction at --beta. `TextEdits.apply` moves S codes by alpha x direction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

import torch

from ...editing.clip_text import clip_model, load_clip, resolve_templates
from ...editing.styleclip import (
    FILE_NAMES,
    GlobalDirections,
    TextEdit,
    apply_direction,
    direction_files,
    kept_channels,
    parse_text_edit,
)
from ...editing.stylespace import StyleDict
from ...errors import SgtoolError
from ...settings import EditOptions

DEFAULT_BETA = EditOptions.model_fields["beta"].default


@dataclass(frozen=True)
class TextPrompts:
    """The run's prompts as CLIP text directions (unit [features] each), ready for any generator."""

    edits: tuple[TextEdit, ...]
    deltas: tuple[torch.Tensor, ...]
    neutral: str
    clip_weights: str  # the file the CLIP weights came from
    templates: int


def check_direction_folder(folder) -> None:
    """`--directions DIR` before the generator is known: a folder holding one of the official pairs."""
    folder = Path(folder).expanduser()
    if folder.is_dir() and any(all((folder / name).is_file() for name in names) for names in FILE_NAMES.values()):
        return
    pairs = [f"{' + '.join(names)} ({kind})" for kind, names in FILE_NAMES.items()]
    what = f"holds neither {' nor '.join(pairs)}" if folder.is_dir() else \
        f"is not a folder; it should hold {' or '.join(pairs)}"
    raise SgtoolError(f"--directions {folder} {what}; build them with `sgtool directions styleclip "
                      "-n GENERATOR -o DIR`")


def encode_prompts(options: EditOptions) -> TextPrompts | None:
    """CLIP text directions of `options.texts` (None without text edits): every file read here, on the CPU."""
    if not options.texts:
        return None
    if options.clip_directions is not None:
        check_direction_folder(options.clip_directions)
    edits = tuple(parse_text_edit(text) for text in options.texts)
    prompts = [edit.prompt for edit in edits]
    if len(set(prompts)) != len(prompts):
        raise SgtoolError(f"--text gives the same prompt twice ({', '.join(prompts)}); give each once")
    templates = resolve_templates(options.templates)
    from ...hub import resolve_checkpoint

    weights = str(resolve_checkpoint(options.clip_weights, kind="clip"))
    clip = load_clip(weights, clip_model(options.clip))
    deltas = tuple(clip.text_direction(prompt, options.neutral, templates).cpu() for prompt in prompts)
    return TextPrompts(edits, deltas, options.neutral, weights, len(templates))


@dataclass(frozen=True)
class TextDirection:
    """One prompt's StyleSpace direction at `beta`, moved by `alpha` (its own, else the run's)."""

    edit: TextEdit
    delta_i: torch.Tensor
    alpha: float
    beta: float
    direction: StyleDict
    channels: int  # S channels the direction moves

    @property
    def label(self) -> str:
        return f"{TextEdit(self.edit.prompt).label}{self.alpha:+g}"


@dataclass(frozen=True)
class TextEdits:
    """The run's text edits against one generator's directions."""

    directions: GlobalDirections
    texts: tuple[TextDirection, ...]
    prompts: TextPrompts

    @property
    def label(self) -> str:
        """'a_smiling_face+4_an_old_face-2', then '_b0.1' when beta is not the default."""
        return self.label_for()

    def label_for(self, swept: str | None = None) -> str:
        """The label, leaving out what a sweep of `swept` (alpha or beta) varies."""
        parts = [TextEdit(text.edit.prompt).label if swept == "alpha" and text.edit.alpha is None else text.label
                 for text in self.texts]
        beta = self.texts[0].beta
        return "_".join(parts + ([f"b{beta:g}"] if beta != DEFAULT_BETA and swept != "beta" else []))

    @property
    def moves(self) -> bool:
        return any(text.alpha != 0 and text.channels for text in self.texts)

    def at(self, alpha: float | None = None, beta: float | None = None) -> "TextEdits":
        """The same prompts with the run's alpha (prompts with their own strength keep it) or beta replaced."""
        texts = []
        for text in self.texts:
            if alpha is not None and text.edit.alpha is None:
                text = replace(text, alpha=alpha)
            if beta is not None:
                direction = self.directions.direction(text.delta_i, beta)
                text = replace(text, beta=beta, direction=direction, channels=kept_channels(direction))
            texts.append(text)
        return replace(self, texts=tuple(texts))

    def apply(self, styles: Mapping[str, torch.Tensor], factors: torch.Tensor | None = None) -> StyleDict:
        """S [N, C] per layer plus every text's alpha x direction (times per-code `factors` [N] when given)."""
        styles = dict(styles)
        for text in self.texts:
            alpha = text.alpha if factors is None else text.alpha * factors.reshape(-1, 1)
            styles = apply_direction(styles, text.direction, alpha)
        return styles

    def records(self) -> list[dict]:
        files = self.directions.files
        return [{"prompt": text.edit.prompt, "neutral": self.prompts.neutral, "alpha": text.alpha,
                 "beta": text.beta, "channels": text.channels, "delta_i_c": str(files.delta_i_c),
                 "s_stats": str(files.s_stats), "clip_weights": self.prompts.clip_weights} for text in self.texts]


def prepare_texts(generator, options: EditOptions, hint: str, prompts: TextPrompts | None = None,
                  beta_swept: bool = False) -> TextEdits | None:
    """The prompts' directions for `generator` (None without text edits); a prompt that would move no S
    channel at --beta is refused (unless beta is swept)."""
    if not options.texts:
        return None
    prompts = prompts if prompts is not None else encode_prompts(options)
    files = direction_files(generator, hint, options.clip_directions)
    directions = GlobalDirections.load(files, generator)
    texts = []
    for edit, delta in zip(prompts.edits, prompts.deltas):
        direction = directions.direction(delta, options.beta)
        channels = kept_channels(direction)
        if not channels and not beta_swept:
            relevance = float((torch.as_tensor(directions.delta_i_c) @ delta).abs().max())
            raise SgtoolError(f"--text {edit.prompt!r} moves no StyleSpace channel at --beta {options.beta:g} (its "
                              f"most relevant channel scores {relevance:.3f}); lower --beta")
        alpha = edit.alpha if edit.alpha is not None else options.alpha
        texts.append(TextDirection(edit, delta, alpha, options.beta, direction, channels))
    return TextEdits(directions, tuple(texts), prompts)
