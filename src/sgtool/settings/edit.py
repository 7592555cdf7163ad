"""Settings of `sgtool edit` (apply edits), `sgtool mix` (style mixing) and `sgtool directions sefa | boundary |
styleclip` (find or build directions)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from .base import Cli, Renamed, Settings
from .commands import SEED_LIMIT, Outdir, PtiOptions, outdir_field, parse_seeds
from .common import (ClipModelOptions, EditOptions, EncoderRef, GeneratorRef, IndexList, InversionOptions, Mask,
                     NoiseMode, Runtime, checked_by, one_or_many)


def _strength_range(value):
    """'START:STOP:COUNT' (text) -> [START, STOP, COUNT]; lists pass through."""
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) != 3:
            raise ValueError("must be START:STOP:COUNT, e.g. -5:5:5")
        return [part.strip() for part in parts]
    return value


def _at_least_two(value: tuple[float, float, int]) -> tuple[float, float, int]:
    if value[2] < 2:
        raise ValueError("COUNT must be at least 2")
    return value


def _parse_style(text):
    from ..editing.stylespace import parse_style

    return parse_style(text)


def _parse_sweep(text):
    from ..editing.directions import parse_sweep

    return parse_sweep(text)


StrengthRange = Annotated[tuple[float, float, int], BeforeValidator(_strength_range), AfterValidator(_at_least_two)]
Seeds = Annotated[str | None, AfterValidator(checked_by(parse_seeds))]


class LocalOptions(Settings):
    """The masked optimisation behind --crossover, --region and --scribble (Image2StyleGAN++)."""

    steps: int = Field(100, ge=1, le=100_000, description="optimisation steps")
    learning_rate: float = Field(0.03, gt=0, le=10, description="peak Adam learning rate (it starts next to the "
                                 "answer, as hybrid inversion does)")
    l2_weight: float = Field(1.0, ge=0, description="pixel MSE weight added to LPIPS-VGG")
    feather: float = Field(0.02, ge=0, le=0.5, description="blur of the region's edge (Gaussian sigma, a fraction "
                           "of the image side): the seam is matched as a cross-fade")
    w_avg_samples: int = Field(10_000, ge=1, le=1_000_000, description="mapped samples for w_avg (a crossover's "
                               "start without an encoder)")
    seed: int = Field(0, ge=0, lt=SEED_LIMIT, description="seed of the optimisation")


class EditSettings(EditOptions, Runtime):
    network: Annotated[GeneratorRef, Cli(short="-n")] = Field(None, description="generator the latents belong to, "
                                                              "a tuned one too (photos with --encoder: its decoder)")
    encoder: Annotated[EncoderRef, Cli(short="-e")] = Field(None, description="encoder for photo inputs (they are "
                                                            "aligned and inverted first)")
    w_encoder: Annotated[EncoderRef, Cli()] = Field(None, description="photos with a StyleFeatureEditor -e: the e4e "
                                                    "whose codes measure edits (HyperStyle: its W encoder)")
    faces: Annotated[IndexList, Cli("--face", metavar="LIST")] = Field(
        None, description="photo inputs: which faces, largest first, e.g. 0 or 0-2 (null: every face)")
    tune_steps: Annotated[int, Cli(hidden=("--tune",), metavar="STEPS")] = Field(
        0, ge=0, le=100_000, description="photo inputs: PTI steps per face on its unaligned crop (0: none)")
    pti: PtiOptions = Field(default_factory=lambda: PtiOptions(save_every=None),
                            description="PTI of --tune (its steps come from --tune)")
    invert: InversionOptions = Field(default_factory=InversionOptions, description="how photo faces are inverted")
    mask: Mask = Field(default_factory=Mask, description="photo inputs: paste-back mask (fractions of the face size)")
    jpeg_quality: int = Field(95, ge=1, le=100, description="quality of edited photos written as JPEG")
    styles: Annotated[list[str], BeforeValidator(one_or_many), AfterValidator(checked_by(_parse_style)),
                      Cli("--style", metavar="LAYER:CHANNEL=STRENGTH")] = Field(
        default_factory=list, description="StyleSpace channel edit (repeatable)")
    sweep: Annotated[str | None, AfterValidator(checked_by(_parse_sweep)), Cli(metavar="NAME=START:STOP:COUNT")] = \
        Field(None, description="grid of strengths, e.g. age=-4:4:9 (with --text: alpha=-4:4:9 or beta=0.08:0.16:5)")
    animate: Annotated[bool, Cli()] = Field(False, description="with --sweep: also write an mp4 per latent")
    fps: Annotated[float, Cli()] = Field(8.0, gt=0, le=240, description="frame rate of --animate")
    transforms: Annotated[Path | None, Cli()] = Field(None, description="landmarks transforms (alignment.json or "
                                                      "stylegan3-editing .npy): render unaligned")
    aligned: Annotated[bool, Cli()] = Field(False, description="ignore every transform and render the aligned view")
    step: Annotated[int, Cli()] = Field(-1, ge=-1000, le=1000, description="step of a multi-step latents dict "
                                        "(-1 = last)")
    outdir: Outdir = outdir_field("out/edit")
    noise_mode: NoiseMode = Field("const", description="StyleGAN2 noise inputs")
    style_units: Literal["std", "raw"] = Field("std", description="--style strengths in channel standard "
                                               "deviations or raw values")
    style_std_samples: int = Field(2000, ge=10, le=1_000_000, description="samples used to measure those stds")
    batch_size: int = Field(8, ge=1, le=1024, description="images rendered per pass in sweeps")
    crossover: Annotated[bool, Cli()] = Field(False, description="two inputs A B (images or latents) -> one "
                                              "latent rendering A under --mask and B elsewhere")
    crossover_mask: Annotated[Path | None, Cli("--mask")] = Field(None, description="--crossover: grayscale "
                                                                  "image, white where A is taken")
    region: Annotated[Path | None, Cli()] = Field(None, description="edit only here: grayscale image over the "
                                                  "render (photos: over the photo, its size), white where the edit "
                                                  "applies, or a face part of photos (mouth, eyes, eyebrows, nose, "
                                                  "face, skin, hair); outside keeps the unedited render (masked "
                                                  "optimisation of the edited latent)")
    scribble: Annotated[Path | None, Cli()] = Field(None, description="a copy of the latent's render (or of the "
                                                    "photo) with strokes painted on: the strokes made real, the "
                                                    "rest kept")
    local: LocalOptions = Field(default_factory=LocalOptions, description="masked optimisation of --crossover, "
                                "--region and --scribble")
    feature_edits: bool = Field(True, description="latents inverted by a feature-space encoder (StyleFeatureEditor: "
                                "NAME_features.safetensors beside them) are edited through its feature editor; false: "
                                "their W+ code only, as any latent")

    cli_nested: ClassVar = {"invert.method": Cli("--method", short="-m"), "local.steps": Cli("--local-steps")}

    @model_validator(mode="after")
    def _masked_edits(self):
        edits = self.edits or self.styles or self.texts
        if (self.crossover or self.scribble is not None) and (edits or self.sweep):
            raise ValueError("--crossover and --scribble make a latent of their own: give --edit, --style, --text "
                             "or --sweep in a later edit of it")
        if self.crossover_mask is not None and not self.crossover:
            raise ValueError("--mask is the region of --crossover; a local edit takes --region")
        if self.region is not None and (self.scribble is not None or self.sweep or not edits):
            raise ValueError("--region confines --edit, --style or --text edits (not sweeps or scribbles)")
        return self


class MixSettings(Runtime):
    """NVIDIA's style-mixing figure: the --layers style inputs of the column codes over the row codes."""

    network: Annotated[GeneratorRef, Cli(short="-n")] = Field(None, description="generator the latents belong to "
                                                              "(required)")
    layers: Annotated[IndexList, Cli(metavar="LIST")] = Field(None, description="style inputs taken from the column "
                                                              "code, e.g. 8-15 (fine styles) or 0-3 (coarse)")
    rows: Annotated[Seeds, Cli(metavar="SEEDS", hidden=("--mix-rows",)), Renamed("mix_rows")] = Field(
        None, description="seeds of the rows instead of latent files, e.g. 0-3")
    cols: Annotated[Seeds, Cli(metavar="SEEDS", hidden=("--mix-cols",)), Renamed("mix_cols")] = Field(
        None, description="seeds of the columns")
    trunc: Annotated[float, Cli(), Renamed("preview_trunc")] = Field(0.7, ge=0, le=1, description="truncation psi "
                                                                     "of the seeds' codes")
    step: Annotated[int, Cli()] = Field(-1, ge=-1000, le=1000, description="step of a multi-step latents dict "
                                        "(-1 = last)")
    noise_mode: NoiseMode = Field("const", description="StyleGAN2 noise inputs")
    outdir: Outdir = outdir_field("out/mix")


class SefaSettings(Runtime):
    """Closed-form factorisation (SeFa): directions from the generator's style weights, no labels."""

    network: Annotated[GeneratorRef, Cli(short="-n")] = Field(None, description="generator to factorise (required)")
    top: Annotated[int, Cli()] = Field(10, ge=1, le=4096, description="how many directions, strongest first")
    layers: Annotated[IndexList, Cli(metavar="LIST")] = Field(None, description="style inputs whose weights are "
                                                              "factorised and the preview edits (null: all)")
    preview: Annotated[StrengthRange, Renamed("sefa_preview")] = Field(
        (-5.0, 5.0, 5), description="START:STOP:COUNT strengths of the preview grid")
    preview_seed: int = Field(0, ge=0, lt=SEED_LIMIT, description="seed of the preview latent when no latent file "
                              "is given")
    preview_trunc: float = Field(0.7, ge=0, le=1, description="truncation of that latent")
    step: Annotated[int, Cli()] = Field(-1, ge=-1000, le=1000, description="step of a multi-step latents dict "
                                        "(-1 = last)")
    noise_mode: NoiseMode = Field("const", description="StyleGAN2 noise inputs")
    outdir: Outdir = outdir_field("out/sefa")


class BoundarySettings(Settings):
    """An InterFaceGAN boundary: a linear SVM on the latents a CSV scores."""

    name: Annotated[str | None, Cli(), Renamed("boundary_name")] = Field(
        None, description="output NAME_boundary.npy (null: the CSV's stem)")
    ratio: Annotated[float, Renamed("boundary_ratio")] = Field(
        0.02, gt=0, description="top and bottom fraction (<= 1) or count (> 1) of samples used, as InterFaceGAN")
    split: Annotated[float, Renamed("boundary_split")] = Field(0.7, gt=0, lt=1, description="training share of "
                                                               "those")
    seed: Annotated[int, Renamed("boundary_seed")] = Field(0, ge=0, lt=SEED_LIMIT, description="seed of the split")
    space: Annotated[Literal["w", "wplus"], Cli(), Renamed("boundary_space")] = Field(
        "w", description="w (rows of each W+ averaged) or wplus")
    outdir: Outdir = outdir_field("out/boundaries")


class StyleclipDirectionsSettings(ClipModelOptions, Runtime):
    """StyleCLIP's global-direction files (S statistics and each channel's CLIP direction) for any generator."""

    network: Annotated[GeneratorRef, Cli(short="-n")] = Field(None, description="generator to build them for "
                                                              "(required)")
    samples: Annotated[int, Cli()] = Field(300, ge=1, le=100_000, description="images averaged per S channel")
    stats_samples: int = Field(100_000, ge=2, le=10_000_000, description="samples behind the S mean and std")
    strength: float | None = Field(None, gt=0, le=100, description="channel move in stds (null: 5 for faces, 10 "
                                   "otherwise)")
    batch_size: int = Field(8, ge=1, le=1024, description="images rendered per pass")
    outdir: Outdir = outdir_field("out/styleclip-directions")
