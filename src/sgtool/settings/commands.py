"""The settings of every subcommand: one model each, the single declaration of its settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from .base import Cli, Output, Renamed, Settings
from .common import (BackboneRef, Device, EditOptions, EncoderRef, GeneratorRef, IndexList, InversionOptions,
                     Kernels, Mask, NoiseMode, Projector, Runtime, Smoothing, checked_by, one_or_many, split_commas)

SEED_LIMIT = 2 ** 32  # numpy's RandomState takes seeds below 2^32, as NVIDIA's gen_images does

Outdir = Annotated[Path, Cli(short="-o"), Output("dir")]


def _outdir(default: str):
    return Field(Path(default), description="output directory")


# --------------------------------------------------------------------------------------------------
# generate / info / convert


def _pair(value):
    if isinstance(value, str):
        return [part.strip() for part in value.split(",")]
    return value


def _seed_ranges(text: str):
    from ..utils.parsing import seed_ranges

    return seed_ranges(text, limit=SEED_LIMIT)


class GenerateSettings(Runtime):
    network: Annotated[GeneratorRef, Cli(short="-n")] = Field("tiny-stylegan3-t", description="generator: "
                                                              "checkpoint, registry name or built-in test model")
    seeds: Annotated[str, AfterValidator(checked_by(_seed_ranges)), Cli()] = Field(
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
    outdir: Outdir = _outdir("out/generate")
    save_latents: Annotated[bool, Cli()] = Field(False, description="also write seedNNNN.npy (W+ latents)")
    grid: bool = Field(True, description="also write grid.png of the first grid_max images")
    grid_max: int = Field(64, ge=1, le=1024, description="most images in grid.png")


class InfoSettings(Runtime):
    arch: Annotated[Literal["stylegan3-t", "stylegan3-r", "stylegan2"] | None, Cli()] = Field(
        None, description="architecture preset for bare state dicts whose shapes are ambiguous")
    device: Annotated[Device, Cli()] = Field("cpu", description="where the checkpoint is loaded: cpu, cuda, "
                                             "cuda:N or auto")
    kernels: Annotated[Kernels, Cli()] = Field("auto", description="op backend: auto, ref or jit; without a "
                                               "CHECKPOINT: report the kernels built and used here with it")


class ConvertSettings(Runtime):
    to: Annotated[Literal["nvidia-pkl", "rosinality", "sgtool"] | None, Cli()] = Field(
        None, description="target layout (null: from OUT's extension: .pkl, .pt/.pth, .safetensors)")
    verify: Annotated[bool, Cli()] = Field(True, description="load the written file back and compare a render "
                                           "(seed 0) with the source's")
    device: Annotated[Device, Cli()] = Field("cpu", description="where the generator is loaded and checked: "
                                             "cpu, cuda, cuda:N or auto")


# --------------------------------------------------------------------------------------------------
# align / invert


class AlignSettings(Settings):
    outdir: Outdir = _outdir("out/align")
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
    outdir: Outdir = _outdir("out/invert")
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

    @model_validator(mode="after")
    def _consistent(self):
        if self.save_video and self.method in ("encoder", "hyperstyle"):
            raise ValueError("save_video records the optimisation: use it with --method optimize or hybrid")
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
    outdir: Outdir = _outdir("out/tune")
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


# --------------------------------------------------------------------------------------------------
# edit


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


class EditSettings(EditOptions, Runtime):
    network: Annotated[GeneratorRef, Cli(short="-n")] = Field("tiny-stylegan3-t", description="generator the "
                                                              "latents belong to (a tuned one too)")
    encoder: Annotated[EncoderRef, Cli(short="-e")] = Field(None, description="encoder for photo inputs (they are "
                                                            "aligned and inverted first)")
    faces: Annotated[IndexList, Cli("--face", metavar="LIST")] = Field(
        None, description="photo inputs: which faces, largest first, e.g. 0 or 0-2 (null: every face)")
    tune_steps: Annotated[int, Cli("--tune", metavar="STEPS")] = Field(
        0, ge=0, le=100_000, description="photo inputs: PTI steps per face on its unaligned crop (0: none)")
    pti: PtiOptions = Field(default_factory=lambda: PtiOptions(save_every=None),
                            description="PTI of --tune (its steps come from --tune)")
    invert: InversionOptions = Field(default_factory=InversionOptions, description="how photo faces are inverted")
    mask: Mask = Field(default_factory=Mask, description="photo inputs: paste-back mask (fractions of the face size)")
    jpeg_quality: int = Field(95, ge=1, le=100, description="quality of edited photos written as JPEG")
    mix: Annotated[bool, Cli()] = Field(False, description="style mixing: the --layers style inputs of the column "
                                        "latents (or --mix-cols seeds) over the row ones")
    mix_rows: Annotated[str | None, AfterValidator(checked_by(_seed_ranges)), Cli(metavar="SEEDS")] = Field(
        None, description="--mix with seeds: the row seeds, e.g. 0-3")
    mix_cols: Annotated[str | None, AfterValidator(checked_by(_seed_ranges)), Cli(metavar="SEEDS")] = Field(
        None, description="--mix with seeds: the column seeds")
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
    discover: Annotated[Literal["sefa"] | None, Cli()] = Field(None, description="find directions without "
                                                               "labels: sefa")
    top: Annotated[int, Cli()] = Field(10, ge=1, le=4096, description="how many SeFa directions")
    train_boundary: Annotated[Path | None, Cli()] = Field(None, description="CSV of latent,score: train an "
                                                          "InterFaceGAN boundary")
    build_clip_directions: Annotated[bool, Cli()] = Field(
        False, description="compute StyleCLIP s_stats and delta_i_c for --network into --outdir (for --directions)")
    samples: Annotated[int, Cli()] = Field(300, ge=1, le=100_000, description="images averaged per S channel when "
                                           "building directions")
    stats_samples: int = Field(100_000, ge=2, le=10_000_000, description="samples behind the S mean and std of "
                               "built directions")
    strength: float | None = Field(None, gt=0, le=100, description="channel move in stds when building directions "
                                   "(null: 5 for faces, 10 otherwise)")
    step: Annotated[int, Cli()] = Field(-1, ge=-1000, le=1000, description="step of a multi-step latents dict "
                                        "(-1 = last)")
    outdir: Outdir = _outdir("out/edit")
    noise_mode: NoiseMode = Field("const", description="StyleGAN2 noise inputs")
    style_units: Literal["std", "raw"] = Field("std", description="--style strengths in channel standard "
                                               "deviations or raw values")
    style_std_samples: int = Field(2000, ge=10, le=1_000_000, description="samples used to measure those stds")
    batch_size: int = Field(8, ge=1, le=1024, description="images rendered per pass in sweeps")
    sefa_preview: StrengthRange = Field((-5.0, 5.0, 5), description="START:STOP:COUNT strengths of the SeFa "
                                        "preview grid")
    preview_seed: int = Field(0, ge=0, lt=SEED_LIMIT, description="seed of the preview latent when no latent "
                              "is given")
    preview_trunc: float = Field(0.7, ge=0, le=1, description="truncation of that latent")
    boundary_name: str | None = Field(None, description="output NAME_boundary.npy (null: the CSV's stem)")
    boundary_ratio: float = Field(0.02, gt=0, description="top and bottom fraction (<= 1) or count (> 1) of "
                                  "samples used, as InterFaceGAN")
    boundary_split: float = Field(0.7, gt=0, lt=1, description="training share of those")
    boundary_seed: int = Field(0, ge=0, lt=SEED_LIMIT, description="seed of the split")
    boundary_space: Literal["w", "wplus"] = Field("w", description="w (rows of each W+ averaged) or wplus")

    cli_nested: ClassVar = {"invert.method": Cli("--method", short="-m")}


# --------------------------------------------------------------------------------------------------
# video / expand-fov


VIDEO_OUTPUTS = ("output", "input_crops", "recon", "edited", "side_by_side")


class ClipOptions(Settings):
    """How a clip is read, tracked, aligned, inverted and smoothed (the cached stages before rendering)."""

    start: Annotated[float, Cli()] = Field(0.0, ge=0, description="start time in seconds")
    end: Annotated[float | None, Cli()] = Field(None, gt=0, description="end time in seconds (null: the end)")
    max_frames: Annotated[int | None, Cli()] = Field(None, ge=1, description="process at most N frames")
    fps: Annotated[float | None, Cli()] = Field(None, gt=0, le=1000, description="resample the clip to this "
                                                "frame rate (null: keep the source's)")
    face_index: Annotated[int, Cli()] = Field(0, ge=0, le=1000, description="which face when several: 0 = the "
                                              "largest in the first frame with faces")
    min_face_size: float = Field(48, ge=4, description="ignore faces smaller than this many pixels")
    recipe: Literal["ffhq", "eyes"] = Field("ffhq", description="alignment recipe")
    size: Annotated[int | None, Cli()] = Field(None, ge=16, le=4096, description="side of the crops (null: the "
                                               "generator's resolution)")
    supersample: int = Field(2, ge=1, le=8, description="crop resampling runs at this multiple of size")
    landmark_smoothing: Smoothing = Field(default_factory=Smoothing, description="temporal smoothing of the "
                                          "face quads")
    encoder_steps: Annotated[int | None, Cli(hidden=("--steps",)), Renamed("invert_steps")] = Field(
        None, ge=1, le=100, description="ReStyle iterations per frame (null: the reference inference's, 3)")
    batch_size: Annotated[int, Cli()] = Field(4, ge=1, le=1024, description="frames per encoder / generator batch")
    latent_smoothing: Smoothing = Field(default_factory=lambda: Smoothing(window=5), description="temporal "
                                        "smoothing of the latents")
    freeze_fine: Annotated[bool, Cli()] = Field(True, description="replace the fine style inputs by their mean "
                                                "over the clip (stylegan3-editing always does)")
    fine_layers: IndexList = Field(None, description="the fine style inputs (null: 9 and up of 16, the same "
                                   "share of other generators)")
    tune_frames: Annotated[int, Cli(hidden=("--tune",))] = Field(0, ge=0, le=100_000, description="joint PTI "
                                                                 "over N evenly spaced frames (0: none)")
    tune: PtiOptions = Field(default_factory=lambda: PtiOptions(steps=200, batch_size=2, save_every=25),
                             description="joint PTI over the sampled frames")
    crf: int = Field(18, ge=0, le=51, description="H.264 quality (lower is better; 18 is visually lossless)")
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                    "veryslow"] = Field("medium", description="H.264 encoder preset")
    force: Annotated[bool, Cli()] = Field(False, description="recompute every cached stage")

    @model_validator(mode="after")
    def _times(self):
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self


CLIP_CLI = {"landmark_smoothing.window": Cli("--smooth-window"), "landmark_smoothing.method": Cli("--smooth-method"),
            "latent_smoothing.window": Cli("--latent-window"), "tune.steps": Cli("--tune-steps")}


class VideoSettings(ClipOptions, EditOptions, Runtime):
    encoder: Annotated[EncoderRef, Cli(short="-e")] = Field(None, description="ReStyle encoder checkpoint "
                                                            "(.pt or registry name)")
    network: Annotated[GeneratorRef, Cli(short="-n")] = Field(None, description="generator to invert into and "
                                                              "render with (null: the encoder's decoder)")
    outdir: Outdir = _outdir("out/video")
    edit_ramp: Annotated[float, Cli()] = Field(0.0, ge=0, description="seconds over which the edit fades in")
    stitch_steps: Annotated[int, Cli("--stitch-tune")] = Field(0, ge=0, le=100_000, description="per-frame "
                                                               "generator tuning steps (\"Stitch it in Time\")")
    stitch_lr: float = Field(3e-4, gt=0, le=1, description="learning rate of that tuning")
    mask: Mask = Field(default_factory=Mask, description="paste-back mask (fractions of the face size)")
    outputs: Annotated[list[Literal[VIDEO_OUTPUTS]], BeforeValidator(split_commas), Cli(metavar="LIST")] = Field(
        default_factory=lambda: list(VIDEO_OUTPUTS), min_length=1, description="videos to write, comma list of "
        + ", ".join(VIDEO_OUTPUTS))

    cli_nested: ClassVar = {**CLIP_CLI, "mask.selfie": Cli("--selfie-mask")}


class ExpandFovSettings(EditOptions, Runtime):
    network: Annotated[GeneratorRef, Cli(short="-n")] = Field(None, description="StyleGAN3 generator (null with "
                                                              "--encoder: its decoder)")
    left: Annotated[int, Cli()] = Field(0, ge=0, le=100_000, description="pixels to add on the left (at the "
                                        "generator's resolution)")
    right: Annotated[int, Cli()] = Field(0, ge=0, le=100_000, description="pixels to add on the right")
    top: Annotated[int, Cli()] = Field(0, ge=0, le=100_000, description="pixels to add at the top")
    bottom: Annotated[int, Cli()] = Field(0, ge=0, le=100_000, description="pixels to add at the bottom")
    all: Annotated[int | None, Cli("--all")] = Field(None, ge=0, le=100_000, description="pixels to add on every "
                                                     "side (overrides the four above)")
    overlap: float = Field(0.5, ge=0, le=0.9, description="fraction of a window shared with its neighbour")
    feather: int | None = Field(None, ge=0, le=100_000, description="blend width in pixels (null: a quarter of "
                                "the resolution)")
    latent: Annotated[Path | None, Cli()] = Field(None, description="latent of a photo input (skips inversion)")
    transforms: Annotated[Path | None, Cli()] = Field(None, description="landmarks transforms of the latent "
                                                      "files (alignment.json or .npy): expand the unaligned crop "
                                                      "(null: those in the invert.json beside them, if any)")
    encoder: Annotated[EncoderRef, Cli(short="-e")] = Field(None, description="encoder for photo and video "
                                                            "inputs (they are inverted first)")
    outdir: Outdir = _outdir("out/expand-fov")
    invert: InversionOptions = Field(default_factory=InversionOptions, description="how photos are inverted")
    video: ClipOptions = Field(default_factory=ClipOptions, description="how clips are read and inverted (left "
                               "at the defaults: as the `sgtool video` run recorded in OUTDIR, if any)")

    cli_nested: ClassVar = {"invert.method": Cli("--method", short="-m"), "video.start": Cli("--start"),
                            "video.end": Cli("--end"), "video.fps": Cli("--fps"),
                            "video.max_frames": Cli("--max-frames")}

    def margins(self) -> tuple[int, int, int, int]:
        if self.all is not None:
            return (self.all,) * 4
        return self.left, self.right, self.top, self.bottom


# --------------------------------------------------------------------------------------------------
# train-encoder

ENCODER_ARCHS = ("restyle-psp", "restyle-e4e", "psp", "e4e", "hyperstyle")
PROGRESSIVE_ARCHS = ("restyle-e4e", "e4e")
HYPERSTYLE_DEFAULT_LAYERS = "0,2,3,5,6,8,9,11,12,14,15,17,18,20,21,23,24"


class TrainEncoderSettings(Runtime):
    """Training of an encoder for a generator (defaults: the references' training commands)."""

    network: Annotated[GeneratorRef, Cli(short="-n")] = Field(None, description="generator the encoder inverts "
                                                              "into (frozen)")
    arch: Annotated[Literal[ENCODER_ARCHS], Cli()] = Field("restyle-psp", description="restyle-psp, restyle-e4e, "
                                                          "psp, e4e or hyperstyle")
    backbone: Annotated[Literal["ir-se50", "resnet34"] | None, Cli()] = Field(
        None, description="encoder backbone (null: the arch's; ReStyle: ir-se50 or resnet34, pSp/e4e: ir-se50, "
        "HyperStyle: resnet34)")
    width: Annotated[float, Cli()] = Field(1.0, gt=0, le=1, description="channel multiplier of backbone and heads "
                                           "(1: the released layout; smaller: tiny encoders only sgtool loads)")
    input_size: Annotated[int, Cli()] = Field(256, ge=32, le=1024, description="side of the encoder input "
                                              "(256: the references')")
    backbone_init: Annotated[Literal["pretrained", "random"], Cli()] = Field(
        "pretrained", description="pretrained: ArcFace IR-SE50 or ImageNet ResNet-34 weights (as the references); "
                                  "random: from scratch")
    backbone_weights: Annotated[BackboneRef, Cli()] = Field(None, description="those weights (null: "
                                                            "arcface-ir-se50 or resnet34-imagenet)")
    w_encoder: Annotated[EncoderRef, Cli()] = Field(None, description="hyperstyle: the W encoder it starts from "
                                                    "(an e4e/pSp/W-encoder checkpoint, e.g. a run's best.pt)")
    layers_to_tune: Annotated[str, Cli()] = Field(HYPERSTYLE_DEFAULT_LAYERS, description="hyperstyle: generator "
                                                  "layers to predict offsets for (indices past the generator's "
                                                  "are ignored; to-RGB layers allowed)")
    data: Annotated[Path | None, Cli()] = Field(None, description="folder of aligned square images (sgtool align "
                                                "output works as is)")
    test_data: Annotated[Path | None, Cli()] = Field(None, description="held-out folder (null: test_fraction of "
                                                     "--data)")
    test_fraction: float = Field(0.05, gt=0, lt=1, description="share of --data held out when no --test-data")
    synthetic: Annotated[bool, Cli()] = Field(False, description="train on images the generator renders from "
                                              "random latents instead of --data")
    synthetic_size: int = Field(100_000, ge=1, description="synthetic training latents per epoch")
    test_images: Annotated[int, Cli()] = Field(64, ge=1, le=100_000, description="synthetic held-out images "
                                               "(folder data: at most this many held-out images are validated)")
    truncation: float = Field(1.0, ge=0, le=1, description="truncation psi of the synthetic latents")
    flip: bool = Field(True, description="random horizontal flips of training images")
    outdir: Outdir = _outdir("runs/encoder")
    resume: Annotated[Path | None, Cli(metavar="RUN")] = Field(None, description="continue the run in this folder "
                                                               "from its newest checkpoint")
    steps: Annotated[int, Cli()] = Field(500_000, ge=1, le=100_000_000, description="optimizer steps")
    batch_size: Annotated[int, Cli()] = Field(8, ge=1, le=65536, description="images per optimizer step over all "
                                              "processes")
    grad_accum: Annotated[int, Cli()] = Field(1, ge=1, le=1024, description="micro-batches per step (small GPUs)")
    workers: Annotated[int, Cli()] = Field(4, ge=0, le=64, description="DataLoader workers per process")
    iterations: Annotated[int | None, Cli()] = Field(None, ge=1, le=20, description="ReStyle / HyperStyle "
                                                     "iterations per batch (null: 3 for StyleGAN3, 5 otherwise)")
    optimizer: Annotated[Literal["ranger", "adam"], Cli()] = Field("ranger", description="ranger (the "
                                                                  "references') or adam")
    lr: Annotated[float, Cli()] = Field(1e-4, gt=0, le=1, description="learning rate")
    l2_lambda: Annotated[float, Cli()] = Field(1.0, ge=0, description="pixel MSE weight")
    lpips_lambda: Annotated[float, Cli()] = Field(0.8, ge=0, description="LPIPS (AlexNet) weight")
    lpips_random_backbone: bool = Field(False, description="tests only: LPIPS without ImageNet weights")
    id_loss: Annotated[Literal["arcface", "moco", "none"], Cli()] = Field(
        "arcface", description="identity loss: arcface (faces), moco (other domains) or none")
    id_lambda: Annotated[float, Cli()] = Field(0.1, ge=0, description="identity loss weight")
    id_weights: Annotated[BackboneRef, Cli()] = Field(None, description="identity net weights (null: "
                                                      "arcface-ir-se50 or moco-v2-resnet50)")
    w_norm_lambda: float = Field(0.0, ge=0, description="pSp's W-norm weight (distance of the codes from "
                                 "latent_avg)")
    latent_lambda: float = Field(0.0, ge=0, description="--synthetic: MSE to the known latents")
    progressive_start: int | None = Field(20_000, ge=0, description="e4e archs: step of the first style offset "
                                          "(null: every style from the start, no delta regularisation)")
    progressive_step_every: int = Field(2_000, ge=1, description="e4e archs: a new style offset every N steps")
    delta_norm: int = Field(2, ge=1, le=2, description="e4e archs: norm of the delta regulariser")
    delta_norm_lambda: float = Field(2e-4, ge=0, description="e4e archs: delta regulariser weight")
    w_discriminator_lambda: float = Field(0.1, ge=0, description="e4e archs: latent discriminator loss weight "
                                          "(0: no discriminator)")
    w_discriminator_lr: float = Field(2e-5, gt=0, description="latent discriminator Adam learning rate")
    r1: float = Field(10.0, ge=0, description="latent discriminator R1 weight")
    d_reg_every: int = Field(16, ge=1, description="R1 every N steps")
    w_pool_size: int = Field(50, ge=0, description="latent pools of the discriminator (0: none)")
    val_every: Annotated[int, Cli()] = Field(1000, ge=1, description="validate every N steps (and at the end)")
    save_every: Annotated[int, Cli()] = Field(5000, ge=1, description="write a checkpoint every N steps (and at "
                                              "the end)")
    keep_last: Annotated[int, Cli()] = Field(3, ge=1, le=1000, description="step checkpoints kept")
    log_every: int = Field(50, ge=1, description="training losses to TensorBoard and metrics.jsonl every N steps")
    grid_images: int = Field(4, ge=1, le=64, description="held-out images in each validation grid")
    sync_bn: Annotated[bool, Cli()] = Field(False, description="synchronise batch-norm statistics over processes")
    seed: Annotated[int, Cli()] = Field(0, ge=0, lt=2 ** 31, description="seed of initialisation, data order and "
                                        "synthetic latents")

    @property
    def encoder_backbone(self) -> str:
        """--backbone, or the arch's own when it is not given."""
        return self.backbone or ("resnet34" if self.arch == "hyperstyle" else "ir-se50")

    @model_validator(mode="after")
    def _consistent(self):
        if self.synthetic and self.data is not None:
            raise ValueError("give --data or --synthetic, not both")
        if self.test_data is not None and self.data is None:
            raise ValueError("--test-data goes with --data")
        if self.latent_lambda and not self.synthetic:
            raise ValueError("latent_lambda needs --synthetic (only rendered images have known latents)")
        if self.arch == "hyperstyle" and self.backbone not in (None, "resnet34"):
            raise ValueError("--arch hyperstyle uses the resnet34 backbone; drop --backbone")
        if self.arch in ("psp", "e4e") and self.backbone not in (None, "ir-se50"):
            raise ValueError(f"--arch {self.arch} uses the ir-se50 backbone; drop --backbone")
        if self.width != 1 and self.backbone_init == "pretrained":
            raise ValueError(f"--width {self.width}: the released backbones are full width; train a narrower encoder "
                             "with --backbone-init random")
        if self.input_size & (self.input_size - 1):
            raise ValueError("input_size must be a power of two")
        return self


COMMAND_SETTINGS: dict[str, type[Settings]] = {
    "generate": GenerateSettings, "info": InfoSettings, "convert": ConvertSettings, "align": AlignSettings,
    "invert": InvertSettings, "tune": TuneSettings, "edit": EditSettings, "video": VideoSettings,
    "expand-fov": ExpandFovSettings, "train-encoder": TrainEncoderSettings,
}
