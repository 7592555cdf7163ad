"""Setting types and sections shared by several commands."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator

from .base import Checkpoint, Cli, Renamed, Settings

NoiseMode = Literal["const", "random", "none"]
Kernels = Literal["auto", "ref", "jit"]


def _device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(value)):
        raise ValueError("choose auto, cpu, cuda or cuda:N")
    return str(value)


INDEX_LIMIT = 100_000  # no generator has as many style inputs, no photo as many faces


def parse_index_list(value) -> list[int] | None:
    """'0-5,8' / [0, 1] / 'all' / None -> sorted unique indices (None = all), each below INDEX_LIMIT."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "all")):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, (list, tuple)):
        out = []
        for item in value:
            out += parse_index_list(item) if isinstance(item, str) else [item]
        return sorted(set(int(v) for v in out))
    if isinstance(value, str):
        out = []
        for part in value.replace(" ", "").split(","):
            if match := re.fullmatch(r"(\d+)-(\d+)", part):
                lo, hi = int(match.group(1)), int(match.group(2))
                if hi < lo:
                    raise ValueError(f"range {part} runs backwards")
                if hi >= INDEX_LIMIT:
                    raise ValueError(f"range {part} goes past {INDEX_LIMIT - 1}, more than any generator or photo has")
                out += range(lo, hi + 1)
            elif re.fullmatch(r"\d+", part):
                if int(part) >= INDEX_LIMIT:
                    raise ValueError(f"index {part} is past {INDEX_LIMIT - 1}, more than any generator or photo has")
                out.append(int(part))
            elif part:
                raise ValueError(f"cannot read {part!r}: use indices and ranges such as 0-5,8 (or all)")
        return sorted(set(out)) or None
    raise ValueError("give indices and ranges such as 0-5,8")


def _non_negative(values: list[int] | None) -> list[int] | None:
    if values and min(values) < 0:
        raise ValueError("indices start at 0")
    return values


# Style-input indices such as "0-5,8" (range checked against the generator at run time).
IndexList = Annotated[list[int] | None, BeforeValidator(parse_index_list), AfterValidator(_non_negative)]
Device = Annotated[str, AfterValidator(_device)]


def _not_blank(value: str) -> str:
    if not str(value).strip():
        raise ValueError("is empty")
    return value


def _not_empty(value: str | None) -> str | None:
    if value is not None and not str(value).strip():
        raise ValueError("is empty; give a checkpoint file or a registry name (`sgtool models list`)")
    return value


# Checkpoints: a file, a model registry name or (generators) a built-in test model; resolved before any work.
GeneratorRef = Annotated[str | None, Checkpoint("generator"), AfterValidator(_not_empty)]
EncoderRef = Annotated[str | None, Checkpoint("encoder"), AfterValidator(_not_empty)]
BackboneRef = Annotated[str | None, Checkpoint("backbone"), AfterValidator(_not_empty)]


def split_commas(value):
    """'a,b' (or ['a,b', 'c'], a repeated option) -> ['a', 'b', 'c'] for list settings given as command-line words."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)):
        parts = [part for item in value for part in (item.split(",") if isinstance(item, str) else [item])]
        return [part.strip() if isinstance(part, str) else part for part in parts
                if not isinstance(part, str) or part.strip()]
    return value


def named_pairs(value):
    """{NAME: FILE} (a YAML mapping) -> ['NAME=FILE']; lists pass through."""
    if isinstance(value, dict):
        return [f"{k}={v}" for k, v in value.items()]
    if isinstance(value, str):
        return [value]
    return value


NamedFiles = Annotated[list[str], BeforeValidator(named_pairs)]


class Runtime(Settings):
    """Where to run: every command that renders takes these."""

    device: Annotated[Device, Cli()] = Field("auto", description="auto (CUDA when available), cpu, cuda or cuda:N")
    kernels: Annotated[Kernels, Cli()] = Field("auto", description="op backend: auto (compiled when built and "
                                                                  "checked), ref (pure PyTorch) or jit")


class Projector(Settings):
    """Optimisation-based projection (NVIDIA's projector schedule); None picks the recipe's value."""

    recipe: Literal["nvidia", "pti"] = Field("nvidia", description="nvidia: NVIDIA's projector (lr 0.1, w spread "
                                             "from 10,000 samples); pti: PTI's W projection (lr 0.01, 600 samples)")
    initial_learning_rate: float | None = Field(None, gt=0, le=10, description="peak Adam learning rate (null: "
                                                "the recipe's; hybrid: 0.03)")
    initial_noise_factor: float | None = Field(None, ge=0, le=10, description="latent exploration noise x the "
                                               "spread of w (null: 0.05 in W, 0.01 in W+; hybrid: 0)")
    noise_ramp_length: float = Field(0.75, gt=0, le=1, description="fraction of the run over which that noise "
                                     "fades out")
    lr_rampup_length: float = Field(0.05, ge=0, le=1, description="fraction of the run the learning rate ramps up")
    lr_rampdown_length: float = Field(0.25, gt=0, le=1, description="fraction of the run it ramps down")
    regularize_noise_weight: float = Field(1e5, ge=0, description="StyleGAN2 noise-map regulariser weight")
    noise_steps: int = Field(0, ge=0, le=100_000, description="W+N (Image2StyleGAN++, StyleGAN2 only): then fit "
                             "the noise maps this many steps by MSE, the latent held (sgtool invert writes them "
                             "as NAME_noise.safetensors and renders with them)")
    noise_learning_rate: float = Field(0.1, gt=0, le=10, description="Adam learning rate of those noise steps")
    w_avg_samples: int | None = Field(None, ge=1, le=1_000_000, description="mapped samples for the mean and "
                                      "spread of w (null: the recipe's)")
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32", description="bf16: generator and LPIPS in bfloat16 (latent, Adam and losses float32) where the CPU "
        "(AVX512-BF16/AMX) or GPU has it, else float32 with one warning; auto: bf16 where PTI measured faster "
        "(CPUs with AMX, bf16 GPUs), silently")

    def options(self, hybrid: bool = False) -> dict:
        """Keyword arguments for `pipelines.invert.project.project`."""
        recipe = {"nvidia": {"initial_learning_rate": 0.1, "w_avg_samples": 10_000},
                  "pti": {"initial_learning_rate": 0.01, "w_avg_samples": 600}}[self.recipe]
        if hybrid:  # starts next to the answer: smaller steps and no noise that would throw it away
            recipe.update(initial_learning_rate=0.03, initial_noise_factor=0.0)
        values = self.model_dump(exclude={"recipe"})
        return {**values, **{k: v for k, v in recipe.items() if values.get(k) is None}}


class Smoothing(Settings):
    """How one per-frame signal is smoothed over time (zero-phase: every frame kept, nothing lags)."""

    method: Literal["gaussian", "one_euro", "none"] = Field("gaussian", description="gaussian, one_euro "
                                                            "(forward-backward) or none")
    window: int = Field(9, ge=1, le=999, description="gaussian taps in frames (odd); sigma = window / 4")
    ends: Literal["linear", "reflect", "nearest"] = Field("linear", description="clip ends: linear (keeps the "
                                                          "velocity), reflect or nearest")
    min_cutoff: float = Field(1.0, gt=0, description="one_euro: minimum cutoff (Hz)")
    beta: float = Field(0.0, ge=0, description="one_euro: speed coefficient")
    d_cutoff: float = Field(1.0, gt=0, description="one_euro: derivative cutoff (Hz)")

    @field_validator("window")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("the window must be an odd number of frames")
        return value

    def record(self) -> dict:
        return self.model_dump()


class Mask(Settings):
    """The feathered head mask edited faces are pasted back under (fractions of the face size)."""

    grow: float = Field(0.08, ge=0, le=5, description="dilate the face-mesh hull by this much")
    forehead: float = Field(0.35, ge=0, le=5, description="stretch the hull up to cover the forehead")
    feather: float = Field(0.08, ge=0, le=5, description="Gaussian feather sigma (0 exactly 3 sigma outside)")
    selfie: bool = Field(False, description="widen the mask with mediapipe's selfie segmentation (hair, ears)")
    selfie_reach: float = Field(0.6, ge=0, le=5, description="how far beyond the hull the selfie mask may reach")


def checked_by(parse):
    """A validator that reads the value (or each item of a list) with `parse`, the parser the pipeline uses,
    so a bad one is refused with the parser's own one-line message when the settings load, before any work."""

    def check(values):
        from ..errors import SgtoolError

        for text in [values] if isinstance(values, str) else values or ():
            try:
                parse(text)
            except SgtoolError as exc:
                raise ValueError(str(exc)) from None
        return values

    return check


def _parse_edit(text):
    from ..editing.directions import parse_edit

    return parse_edit(text)


def _parse_named_file(text):
    from ..editing.directions import parse_named_file

    return parse_named_file(text)


def _parse_text_edit(text):
    from ..editing.styleclip import parse_text_edit

    return parse_text_edit(text)


def one_or_many(value):
    """A single text where a list is expected (`--set edits=age=+2`) -> [text]."""
    return [value] if isinstance(value, str) else value


def _once_each(values: list[str]) -> list[str]:
    names = [str(text).partition("=")[0].strip() for text in values]
    if len(set(names)) != len(names):
        raise ValueError(f"names a direction twice ({', '.join(names)}); give each once")
    return values


class ClipModelOptions(Settings):
    """The CLIP model behind text edits and the directions built for them."""

    clip: Annotated[str, Cli(), AfterValidator(_not_blank)] = Field(
        "ViT-B-32", description="CLIP architecture: an open_clip model name or a .json model config")
    clip_weights: Annotated[str, Cli(), AfterValidator(_not_blank)] = Field(
        "clip-vit-b-32-openai", description="CLIP weights: a file (.safetensors, .pt) or registry name")


class EditOptions(ClipModelOptions):
    """Which edits to apply: shared by edit, video and expand-fov (`pipelines.edit.prepare_edits` resolves them)."""

    edits: Annotated[list[str], BeforeValidator(one_or_many), AfterValidator(checked_by(_parse_edit)),
                     AfterValidator(_once_each),
                     Cli("--edit")] = Field(default_factory=list, description="NAME=STRENGTH, e.g. age=+2 "
                                            "(repeatable)")
    directions: Annotated[NamedFiles, AfterValidator(checked_by(_parse_named_file)),
                          Cli("--direction", metavar="NAME=FILE"), Renamed("extra_directions")] = \
        Field(default_factory=list, description="add a direction: NAME=FILE.npy (repeatable)")
    layers: Annotated[IndexList, Cli(hidden=("--edit-layers",), metavar="LIST"), Renamed("edit_layers")] = Field(
        None, description="style inputs a W edit touches, e.g. 0-5 (null: all)")
    mode: Annotated[Literal["auto", "w", "wplus"], Cli()] = Field(
        "auto", description="direction shape: w (one w_dim vector for every chosen style input), wplus (one row "
        "per style input) or auto (either)")
    directions_dir: Path | None = Field(None, description="folder of the named direction files (null: "
                                        "$SGTOOL_HOME/directions)")
    direction_set: str = Field("auto", description="which set of named directions (configs/directions.yaml); "
                               "auto: from the generator")
    texts: Annotated[list[str], BeforeValidator(one_or_many), AfterValidator(checked_by(_parse_text_edit)),
                     Cli("--text", metavar="PROMPT[=ALPHA]")] = Field(
        default_factory=list, description="StyleCLIP text edit, e.g. \"a smiling face\" or \"a smiling face\"=3 "
        "(repeatable; the directions add up)")
    alpha: Annotated[float, Cli()] = Field(4.0, ge=-100, le=100, description="strength of text edits without "
                                           "their own")
    beta: Annotated[float, Cli()] = Field(0.13, ge=0, le=1, description="disentanglement threshold of text edits: "
                                          "S channels less relevant to the text than this stay put")
    neutral: Annotated[str, Cli(), AfterValidator(_not_blank)] = Field(
        "a face", description="the neutral prompt a text edit is measured from")
    clip_directions: Annotated[Path | None, Cli("--directions", metavar="DIR")] = Field(
        None, description="folder of the StyleCLIP pair for this generator (delta_i_c.npy + s_stats, or StyleGAN2's "
        "fs3.npy + S_mean_std; null: the published pair of a known generator)")
    templates: Annotated[str, AfterValidator(_not_blank)] = Field(
        "styleclip-templates", description="prompt templates (one per line with {}): a file or registry name")


class InversionOptions(Settings):
    """How a photo becomes a latent: shared by invert and the commands that invert first."""

    method: Annotated[Literal["encoder", "optimize", "hybrid", "hyperstyle"], Cli(short="-m")] = Field(
        "encoder", description="encoder (ReStyle/pSp/e4e), optimize (projection from w_avg), hybrid (projection "
        "from the encoder's code) or hyperstyle (encoder + per-image weight offsets)")
    encoder_steps: Annotated[int | None, Cli(hidden=("--steps",)), Renamed("steps")] = Field(
        None, ge=1, le=100, description="encoder refinement steps (null: the reference inference's, 3 for "
        "ReStyle over StyleGAN3, 5 for ReStyle over StyleGAN2 and HyperStyle)")
    space: Annotated[Literal["w", "w+"], Cli()] = Field("w+", description="w or w+ (optimize / hybrid)")
    project_steps: Annotated[int, Cli(hidden=("--num-steps",)), Renamed("num_steps")] = Field(
        500, ge=1, le=100_000, description="optimisation steps (optimize / hybrid)")
    l2_weight: Annotated[float, Cli()] = Field(1.0, ge=0, description="pixel MSE weight added to LPIPS-VGG in "
                                               "the projection")
    seed: Annotated[int, Cli()] = Field(0, ge=0, lt=2 ** 32, description="seed of the projection's noise")
    batch_size: Annotated[int, Cli()] = Field(4, ge=1, le=1024, description="images per encoder pass")
    align: Annotated[bool, Cli()] = Field(True, description="align raw photos first (the largest face); false: "
                                          "inputs are aligned crops")
    align_recipe: Literal["ffhq", "eyes"] = Field("ffhq", description="alignment recipe for raw photos")
    lpips_random_backbone: Annotated[bool, Renamed("random_lpips_backbone")] = Field(
        False, description="tests only: LPIPS without ImageNet weights (meaningless distances)")
    projector: Projector = Field(default_factory=Projector, description="projection schedule")
