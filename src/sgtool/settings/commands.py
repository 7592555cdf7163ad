"""The settings of every subcommand: one model each, the single declaration of its settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from .base import Cli, Output, Renamed, Settings
from .common import (BackboneRef, Device, EncoderRef, GeneratorRef, InversionOptions,
                     Kernels, NoiseMode, Projector, Runtime, checked_by)

SEED_LIMIT = 2 ** 32  # numpy's RandomState takes seeds below 2^32, as NVIDIA's gen_images does

Outdir = Annotated[Path, Cli(short="-o"), Output("dir")]


def outdir_field(default: str):
    return Field(Path(default), description="output directory")


# --------------------------------------------------------------------------------------------------
# generate / info / convert


def _pair(value):
    if isinstance(value, str):
        return [part.strip() for part in value.split(",")]
    return value


def parse_seeds(text: str):
    from ..utils.parsing import seed_ranges

    return seed_ranges(text, limit=SEED_LIMIT)


class GenerateSettings(Runtime):
    network: Annotated[GeneratorRef, Cli(short="-n")] = Field(None, description="generator (required): checkpoint, "
                                                              "registry name or built-in test model")
    seeds: Annotated[str, AfterValidator(checked_by(parse_seeds)), Cli()] = Field(
        "0-7", description="seeds and ranges, e.g. 0-7,12 (each below 2^32)")
    trunc: Annotated[float, Cli()] = Field(1.0, ge=-10, le=10, description="truncation psi (1 = none)")
    trunc_cutoff: Annotated[int | None, Cli()] = Field(None, ge=1, description="truncate only the first N style "
                                                       "inputs (null: all)")
    class_idx: Annotated[int | None, Cli("--class")] = Field(None, alias="class", ge=0,
                                                             description="class index of conditional networks")
    noise_mode: Annotated[NoiseMode, Cli()] = Field("const", description="StyleGAN2 noise inputs")
    rotate: Annotated[float, Cli()] = Field(0.0, ge=-3600, le=3600, description="StyleGAN3: rotate the output "
                                            "by DEG through the input transform")
    translate: Annotated[tuple[float, float], BeforeValidator(_pair), Cli(metavar="X,Y")] = Field(
        (0.0, 0.0), description="StyleGAN3: translate the output by X,Y image widths")
    outdir: Outdir = outdir_field("out/generate")
    save_latents: Annotated[bool, Cli()] = Field(False, description="also write seedNNNN.npy (W+ latents)")
    grid: bool = Field(True, description="also write grid.png of the first grid_max images")
    grid_max: int = Field(64, ge=1, le=1024, description="most images in grid.png")


class InfoSettings(Runtime):
    arch: Annotated[Literal["stylegan3-t", "stylegan3-r", "stylegan2"] | None, Cli()] = Field(
        None, description="architecture preset for bare state dicts whose shapes are ambiguous")
    device: Annotated[Device, Cli()] = Field("auto", description="where the checkpoint is loaded: auto, cpu, cuda, "
                                             "cuda:N")
    kernels: Annotated[Kernels, Cli()] = Field("auto", description="op backend: auto, ref or jit; without a "
                                               "CHECKPOINT: report the kernels built and used here with it")


class ConvertSettings(Runtime):
    to: Annotated[Literal["nvidia-pkl", "rosinality", "sgtool"] | None, Cli()] = Field(
        None, description="target layout (null: from OUT's extension: .pkl, .pt/.pth, .safetensors)")
    verify: Annotated[bool, Cli()] = Field(True, description="load the written file back and compare a render "
                                           "(seed 0) with the source's")
    device: Annotated[Device, Cli()] = Field("auto", description="where the generator is loaded and checked: "
                                             "auto, cpu, cuda or cuda:N")


# --------------------------------------------------------------------------------------------------
# align / invert


class AlignSettings(Settings):
    outdir: Outdir = outdir_field("out/align")
    size: Annotated[int, Cli()] = Field(1024, ge=16, le=4096, description="side of the aligned and unaligned "
                                        "crops in pixels")
    recipe: Annotated[Literal["ffhq", "eyes"], Cli()] = Field("ffhq", description="ffhq (NVIDIA's FFHQ script) "
                                                              "or eyes (square from the eye distance only)")
    max_faces: Annotated[int | None, Cli()] = Field(None, ge=1, description="keep the N largest faces per "
                                                    "image (null: all)")
    min_face_size: Annotated[float, Cli()] = Field(48, ge=4, le=100_000, description="ignore faces whose "
                                                   "detector box is smaller than this many source pixels")
    supersample: int = Field(4, ge=1, le=8, description="warp at supersample x size, then Lanczos down (FFHQ: 4)")
    padding: bool = Field(True, description="FFHQ's blurred reflect padding where the quad leaves the image")
    save_transforms: Annotated[Path | None, Cli(), Output("file")] = Field(
        None, description="also write stylegan3-editing's landmarks_transforms dict to this .npy")
    skip_existing: Annotated[bool, Cli()] = Field(False, description="keep faces already recorded in "
                                                  "OUTDIR/alignment.json with the same settings")

    @field_validator("save_transforms")
    @classmethod
    def _npy(cls, value: Path | None) -> Path | None:
        if value is not None and value.suffix != ".npy":
            raise ValueError("needs a .npy file name")
        return value


class InvertSettings(InversionOptions, Runtime):
    encoder: Annotated[EncoderRef, Cli(short="-e")] = Field(None, description="encoder checkpoint: ReStyle, pSp, "
                                                            "e4e or HyperStyle (.pt or registry name)")
    network: Annotated[GeneratorRef, Cli(short="-n")] = Field(None, description="generator (null: the "
                                                              "encoder's decoder)")
    w_encoder: Annotated[EncoderRef, Cli()] = Field(None, description="HyperStyle's W encoder (null: the file "
                                                    "named in the checkpoint's options)")
    outdir: Outdir = outdir_field("out/invert")
    skip_existing: Annotated[bool, Cli()] = Field(False, description="skip images whose NAME_latent.npy and "
                                                  "NAME_recon.png exist")
    save_steps: Annotated[bool, Cli()] = Field(False, description="write NAME_steps.png (each refinement step, "
                                               "then the input)")
    save_video: Annotated[bool, Cli()] = Field(False, description="write NAME_projection.mp4 (optimize / hybrid)")
    video_fps: int = Field(24, ge=1, le=240, description="frame rate of NAME_projection.mp4")
    metrics: Annotated[bool, Cli()] = Field(False, description="write metrics.json and print a table (MSE, PSNR, "
                                            "LPIPS, MS-SSIM, identity, seconds)")
    metrics_lpips_net: Literal["alex", "vgg"] = Field("alex", description="LPIPS backbone of --metrics")
    id_model: Annotated[BackboneRef, Cli()] = Field(None, description="ArcFace IR-SE50 weights for identity "
                                                    "similarity (model_ir_se50.pth or arcface-ir-se50)")
    mask: Annotated[Path | None, Cli()] = Field(None, description="masked projection (optimize / hybrid): a "
                                                "grayscale image, white where the photo is matched, black where "
                                                "it is unknown and filled; soft values weigh pixels")

    cli_nested: ClassVar = {"projector.noise_steps": Cli("--noise-steps")}

    @model_validator(mode="after")
    def _consistent(self):
        if self.save_video and self.method in ("encoder", "hyperstyle"):
            raise ValueError("save_video records the optimisation: use it with --method optimize or hybrid")
        if self.mask is not None and self.method in ("encoder", "hyperstyle"):
            raise ValueError("a mask weighs the projection's losses: use it with --method optimize or hybrid")
        return self


# --------------------------------------------------------------------------------------------------
# tune


class PtiOptions(Settings):
    """Pivotal Tuning Inversion's hyper-parameters (defaults: PTI's release)."""

    steps: Annotated[int, Cli("--tune-steps", hidden=("--steps",))] = Field(
        350, ge=1, le=1_000_000, description="most tuning steps")
    lr: Annotated[float, Cli()] = Field(3e-4, gt=0, le=1, description="Adam learning rate")
    l2_weight: Annotated[float, Cli()] = Field(1.0, ge=0, description="weight of the MSE term")
    lpips_weight: float = Field(1.0, ge=0, description="weight of the LPIPS term")
    lpips_threshold: Annotated[float, Cli()] = Field(0.06, ge=0, description="stop once every image's LPIPS "
                                                     "is below this")
    lpips_net: Literal["alex", "vgg"] = Field("alex", description="LPIPS backbone")
    lpips_random_backbone: Annotated[bool, Renamed("random_lpips_backbone")] = Field(
        False, description="tests only: LPIPS without ImageNet weights (meaningless distances)")
    locality: Annotated[bool, Cli()] = Field(False, description="PTI's locality regulariser (off in PTI's "
                                             "release)")
    locality_interval: int = Field(1, ge=1, description="regularise every N steps")
    locality_alpha: float = Field(30.0, gt=0, description="distance from the pivot towards a random latent")
    locality_psi: float = Field(0.5, ge=0, le=1, description="truncation of those random latents")
    locality_samples: int = Field(1, ge=1, le=64, description="random latents per pivot and step")
    locality_l2_weight: float = Field(0.1, ge=0, description="locality MSE weight")
    locality_lpips_weight: float = Field(0.1, ge=0, description="locality LPIPS weight")
    batch_size: Annotated[int, Cli()] = Field(1, ge=1, le=1024, description="images per step (joint runs)")
    seed: Annotated[int, Cli()] = Field(0, ge=0, lt=2 ** 32, description="seed of batch order and locality latents")
    save_every: Annotated[int | None, Cli()] = Field(50, ge=1, description="write a resumable checkpoint every N "
                                                     "steps (null: only on Ctrl-C)")
    noise_mode: NoiseMode = Field("const", description="StyleGAN2 noise inputs")
    checkpoint_activations: Literal["auto"] | bool = Field("auto", description="recompute layer internals in "
                                                           "backward (auto: the largest layers, where a step's "
                                                           "would exceed half the free memory)")
    precision: Annotated[Literal["fp32", "bf16", "auto"], Cli()] = Field(
        "auto", description="bf16: generator and LPIPS matmuls and convolutions in bfloat16 (weights, Adam and "
        "losses float32; needs AVX512-BF16, AMX or a bf16 GPU); auto: bf16 on CPUs with AMX (measured 1.2-1.6x "
        "faster per 1024 px step, bench/README.md) and GPUs with bf16, else fp32")

    @field_validator("save_every", mode="before")
    @classmethod
    def _zero_is_none(cls, value):
        return None if value == 0 else value

    def fingerprint_fields(self) -> dict:
        """Settings that change the optimisation path (a checkpoint is only resumed under the same ones)."""
        skip = {"steps", "save_every", "lpips_threshold", "checkpoint_activations"}
        return {k: getattr(self, k) for k in PtiOptions.model_fields if k not in skip}


class TuneInversion(Settings):
    """How photos given without --latents are inverted: by default PTI's own first inversion, a W projection
    with PTI's schedule (lr 0.01, 600 w samples, LPIPS only, 450 steps)."""

    method: Annotated[Literal["encoder", "optimize", "hybrid"], Cli(short="-m")] = Field(
        "optimize", description="encoder, optimize (PTI's W projection) or hybrid (projection from the "
        "encoder's code)")
    space: Literal["w", "w+"] = Field("w", description="w (PTI) or w+")
    project_steps: int = Field(450, ge=1, le=100_000, description="projection steps (PTI: 450)")
    l2_weight: float = Field(0.0, ge=0, description="pixel MSE weight added to LPIPS (PTI: 0)")
    encoder_steps: int | None = Field(None, ge=1, le=100, description="encoder refinement steps (null: the "
                                      "reference inference's)")
    projector: Projector = Field(default_factory=lambda: Projector(recipe="pti"), description="projection "
                                 "schedule (recipe nvidia: NVIDIA's projector)")


class TuneSettings(PtiOptions, Runtime):
    network: Annotated[GeneratorRef, Cli(short="-n")] = Field(None, description="generator the latents were "
                                                              "inverted with")
    latents: Annotated[Path | None, Cli()] = Field(None, description="pivot latents: NAME_latent.npy, a "
                                                   "latents.npy dict or their folder (null: invert first)")
    transforms: Annotated[Path | None, Cli()] = Field(None, description="alignment.json or landmarks-transforms "
                                                      ".npy: tune on unaligned crops (StyleGAN3)")
    align: Annotated[bool, Cli()] = Field(True, description="find each photo's largest face, as invert does, and tune "
                                          "on it: the unaligned crop through its landmarks transform (StyleGAN3) or "
                                          "the aligned crop (StyleGAN2); false: the images are aligned crops (also "
                                          "when --latents were inverted with --no-align or --transforms is given)")
    align_recipe: Literal["ffhq", "eyes"] = Field("ffhq", description="alignment recipe for photos")
    outdir: Outdir = outdir_field("out/tune")
    joint: Annotated[bool, Cli()] = Field(False, description="one generator for all images (video frames) "
                                          "instead of one per image")
    resume: Annotated[bool | None, Cli()] = Field(None, description="null: resume when outdir holds a "
                                                  "checkpoint; true: require one; false: start over")
    export_pkl: Annotated[bool, Cli()] = Field(False, description="also write tuned_generator.pkl (NVIDIA's "
                                               "pickle layout, no code)")
    encoder: Annotated[EncoderRef, Cli(short="-e")] = Field(None, description="encoder for the inversion when "
                                                            "--latents is absent (its decoder is tuned "
                                                            "when --network is absent)")
    invert: TuneInversion = Field(default_factory=TuneInversion, description="inversion when --latents is absent")

    cli_nested: ClassVar = {"invert.method": Cli("--method", short="-m")}
