"""Settings of `sgtool train-encoder`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from .base import Cli, Renamed
from .commands import Outdir, outdir_field
from .common import BackboneRef, EncoderRef, GeneratorRef, Runtime, checked_by

ENCODER_ARCHS = ("restyle-psp", "restyle-e4e", "psp", "e4e", "hyperstyle", "sfe")
ENCODER_TASKS = ("encode", "super-resolution", "sketch", "segmentation", "frontalization", "toonify", "inpainting")
PAIRED_TASKS = ("sketch", "segmentation", "toonify")  # only from --data PAIRS (frontalization: pairs or photos)
MAX_FACTOR = 64


def _parse_factors(text: str) -> list[int]:
    try:
        factors = [int(part) for part in str(text).split(",")]
    except ValueError:
        raise ValueError("give comma-separated integers such as 1,2,4,8") from None
    if not factors or min(factors) < 1 or max(factors) > MAX_FACTOR:
        raise ValueError(f"factors must be between 1 and {MAX_FACTOR}")
    return factors


PROGRESSIVE_ARCHS = ("restyle-e4e", "e4e")
HYPERSTYLE_DEFAULT_LAYERS = "0,2,3,5,6,8,9,11,12,14,15,17,18,20,21,23,24"


class TrainEncoderSettings(Runtime):
    """Training of an encoder for a generator (defaults: the references' training commands)."""

    network: Annotated[GeneratorRef, Cli(short="-n")] = Field(None, description="generator the encoder inverts "
                                                              "into (frozen)")
    arch: Annotated[Literal[ENCODER_ARCHS], Cli()] = Field("restyle-psp", description="restyle-psp, restyle-e4e, "
                                                          "psp, e4e, hyperstyle or sfe (StyleFeatureEditor)")
    backbone: Annotated[Literal["ir-se50", "resnet34", "iresnet50"] | None, Cli()] = Field(
        None, description="encoder backbone (null: the arch's; ReStyle: ir-se50 or resnet34, pSp/e4e: ir-se50, "
        "HyperStyle: resnet34, SFE: iresnet50)")
    width: Annotated[float, Cli()] = Field(1.0, ge=1 / 64, le=1, description="channel multiplier of backbone and "
                                           "heads (1: the released layout; down to 1/64, a channel per 64: tiny "
                                           "encoders only sgtool loads)")
    input_size: Annotated[int, Cli()] = Field(256, ge=32, le=1024, description="side of the encoder input "
                                              "(256: the references')")
    backbone_init: Annotated[Literal["pretrained", "random"], Cli()] = Field(
        "pretrained", description="pretrained: ArcFace IR-SE50 or ImageNet ResNet-34 weights (as the references); "
                                  "random: from scratch")
    backbone_weights: Annotated[BackboneRef, Cli()] = Field(None, description="those weights (null: "
                                                            "arcface-ir-se50 or resnet34-imagenet)")
    w_encoder: Annotated[EncoderRef, Cli()] = Field(None, description="hyperstyle: the W encoder it starts from; "
                                                    "sfe: the e4e whose codes measure edits (an e4e/pSp/W-encoder "
                                                    "checkpoint, e.g. a run's best.pt)")
    feature_layer: Annotated[str | None, Cli()] = Field(
        None, description="sfe: the generator layer whose activation the encoder predicts (a resolution such as 64, "
        "or a layer name: b64, L6_84_1024; null: 1/16 of the output side, at least 16 px)")
    editor_steps: int | None = Field(None, ge=0, description="sfe: the last N of --steps train the feature editor "
                                     "(the paper's second phase; null: a third)")
    edit_directions: int = Field(5, ge=1, le=512, description="sfe: the generator's first N SeFa directions edited "
                                 "while the feature editor trains")
    edit_strength: float = Field(2.0, gt=0, le=20, description="sfe: largest edit strength drawn, in standard "
                                 "deviations of W along the direction")
    feature_weight: float = Field(0.01, ge=0, description="sfe: weight of the predicted feature's distance from "
                                  "the generator's own activation of the code")
    layers_to_tune: Annotated[str, Cli()] = Field(HYPERSTYLE_DEFAULT_LAYERS, description="hyperstyle: generator "
                                                  "layers to predict offsets for (indices past the generator's "
                                                  "are ignored; to-RGB layers allowed)")
    task: Annotated[Literal[ENCODER_TASKS], Cli()] = Field(
        "encode", description="encode (invert photos) or, with --arch psp, an image-to-image task: sketch, "
        "segmentation, toonify (from --data PAIRS: source/ and target/ subfolders, files paired by name), "
        "frontalization (pairs, or photos as pSp: the source flipped apart from the target), super-resolution "
        "(targets degraded by one of --factors), inpainting (targets with random holes)")
    factors: Annotated[str, AfterValidator(checked_by(_parse_factors)), Cli()] = Field(
        "1,2,4,8,16,32", description="super-resolution: downsampling factors, one drawn per image (pSp's "
        "--resize_factors)")
    classes: Annotated[int, Cli()] = Field(19, ge=2, le=256, description="segmentation: classes of the label maps "
                                           "(8-bit class ids 0..N-1; CelebAMask-HQ: 19; pSp's --label_nc)")
    data: Annotated[Path | None, Cli()] = Field(None, description="folder of aligned square images (sgtool align "
                                                "output works as is); paired tasks: a folder holding source/ and "
                                                "target/")
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
    outdir: Outdir = outdir_field("runs/encoder")
    resume: Annotated[Path | None, Cli(metavar="RUN")] = Field(None, description="continue the run in this folder "
                                                               "from its newest checkpoint")
    steps: Annotated[int, Cli()] = Field(500_000, ge=1, le=100_000_000, description="optimizer steps")
    batch_size: Annotated[int, Cli()] = Field(8, ge=1, le=65536, description="images per optimizer step over all "
                                              "processes")
    grad_accum: Annotated[int, Cli()] = Field(1, ge=1, le=1024, description="micro-batches per step (small GPUs)")
    workers: Annotated[int, Cli()] = Field(4, ge=0, le=64, description="DataLoader workers per process")
    encoder_steps: Annotated[int | None, Cli(hidden=("--iterations",)), Renamed("iterations")] = Field(
        None, ge=1, le=20, description="ReStyle / HyperStyle iterations per batch (null: 3 for StyleGAN3, 5 otherwise)")
    optimizer: Annotated[Literal["ranger", "adam"], Cli()] = Field("ranger", description="ranger (the "
                                                                  "references') or adam")
    lr: Annotated[float, Cli()] = Field(1e-4, gt=0, le=1, description="learning rate")
    l2_weight: Annotated[float, Cli(hidden=("--l2-lambda",)), Renamed("l2_lambda")] = Field(
        1.0, ge=0, description="pixel MSE weight")
    lpips_weight: Annotated[float, Cli(hidden=("--lpips-lambda",)), Renamed("lpips_lambda")] = Field(
        0.8, ge=0, description="LPIPS (AlexNet) weight")
    lpips_random_backbone: bool = Field(False, description="tests only: LPIPS without ImageNet weights")
    id_loss: Annotated[Literal["arcface", "moco", "none"], Cli()] = Field(
        "arcface", description="identity loss: arcface (faces), moco (other domains) or none")
    id_weight: Annotated[float, Cli(hidden=("--id-lambda",)), Renamed("id_lambda")] = Field(
        0.1, ge=0, description="identity loss weight")
    id_weights: Annotated[BackboneRef, Cli()] = Field(None, description="identity net weights (null: "
                                                      "arcface-ir-se50 or moco-v2-resnet50)")
    w_norm_weight: Annotated[float, Renamed("w_norm_lambda")] = Field(
        0.0, ge=0, description="pSp's W-norm weight (distance of the codes from latent_avg)")
    latent_weight: Annotated[float, Renamed("latent_lambda")] = Field(
        0.0, ge=0, description="--synthetic: MSE to the known latents")
    progressive_start: int | None = Field(20_000, ge=0, description="e4e archs: step of the first style offset "
                                          "(null: every style from the start, no delta regularisation)")
    progressive_step_every: int = Field(2_000, ge=1, description="e4e archs: a new style offset every N steps")
    delta_norm: int = Field(2, ge=1, le=2, description="e4e archs: norm of the delta regulariser")
    delta_norm_weight: Annotated[float, Renamed("delta_norm_lambda")] = Field(
        2e-4, ge=0, description="e4e archs: delta regulariser weight")
    w_discriminator_weight: Annotated[float, Renamed("w_discriminator_lambda")] = Field(
        0.1, ge=0, description="e4e archs: latent discriminator loss weight (0: no discriminator)")
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
    def factor_list(self) -> list[int]:
        return _parse_factors(self.factors)

    @property
    def encoder_backbone(self) -> str:
        """--backbone, or the arch's own when it is not given."""
        return self.backbone or {"hyperstyle": "resnet34", "sfe": "iresnet50"}.get(self.arch, "ir-se50")

    @model_validator(mode="after")
    def _consistent(self):
        if self.synthetic and self.data is not None:
            raise ValueError("give --data or --synthetic, not both")
        if self.test_data is not None and self.data is None:
            raise ValueError("--test-data goes with --data")
        if self.latent_weight and not self.synthetic:
            raise ValueError("latent_weight needs --synthetic (only rendered images have known latents)")
        if self.arch == "hyperstyle" and self.backbone not in (None, "resnet34"):
            raise ValueError("--arch hyperstyle uses the resnet34 backbone; drop --backbone")
        if self.arch in ("psp", "e4e") and self.backbone not in (None, "ir-se50"):
            raise ValueError(f"--arch {self.arch} uses the ir-se50 backbone; drop --backbone")
        if (self.arch == "sfe") != (self.encoder_backbone == "iresnet50"):
            raise ValueError("iresnet50 is SFE's backbone, and SFE's only one: drop --backbone")
        if self.width != 1 and self.backbone_init == "pretrained":
            raise ValueError(f"--width {self.width}: the released backbones are full width; train a narrower encoder "
                             "with --backbone-init random")
        if self.task != "encode" and self.arch != "psp":
            raise ValueError(f"--task {self.task} trains pSp's image-to-image encoder: use --arch psp")
        if self.task in PAIRED_TASKS and self.synthetic:
            raise ValueError(f"--task {self.task} learns from paired files: pass --data PAIRS (a folder holding "
                             "source/ and target/, files paired by name) instead of --synthetic")
        if self.task == "super-resolution" and 3 * max(_parse_factors(self.factors)) // 2 >= self.input_size:
            raise ValueError(f"--factors {self.factors}: the largest factor's padding (3f/2) leaves the "
                             f"{self.input_size} px input; use factors below {(2 * self.input_size + 2) // 3}")
        if self.input_size & (self.input_size - 1):
            raise ValueError("input_size must be a power of two")
        return self

