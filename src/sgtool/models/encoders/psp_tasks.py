"""pSp as an image-to-image model: sketch / segmentation to face, super-resolution, frontalisation, toonify.

A pSp task checkpoint is the same file as a pSp encoder (`encoder.*`, `decoder.*`, `opts`, `latent_avg`); its
`opts` say what the encoder reads: `label_nc` 1 a grayscale sketch in [0, 1], `label_nc` N > 1 an N-channel
one-hot label map, 0 an RGB image in [-1, 1] (`resize_factors` / a super-resolution `dataset_type`: a degraded
photo). The encoder output plus `latent_avg` is the W+ code the decoder renders with its stored noise maps; pSp's
multi-modal synthesis replaces (or blends) chosen W+ rows with the mapping of random z, rendered with fresh noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ...errors import CheckpointError, SgtoolError
from .inverter import encoder_size, face_pool, fit_input
from .loading import EncoderCheckpoint, read_encoder_checkpoint, sgtool_arch
from .sg2_encoders import (SG2_ENCODERS, EncoderOverGenerator, _style_count, build_sg2_encoder, latent_offset,
                           resolve_generator)

TASK_KINDS = ("sketch", "segmentation", "super-resolution", "photo")
SUPER_RESOLUTION_FACTORS = "1,2,4,8,16,32"  # pSp's default when a super-resolution run names none


@dataclass(frozen=True)
class PspTask:
    """What a pSp checkpoint's encoder reads, from its training options."""

    kind: str  # one of TASK_KINDS
    dataset_type: str
    input_nc: int
    label_nc: int
    factors: tuple[int, ...] = ()  # super-resolution: the downsampling factors it was trained on
    input_size: int = 256  # the side inputs are prepared at (smaller for tiny sgtool-trained encoders)

    @property
    def pil_mode(self) -> str:
        """How pSp opens the input file: 'L' for any label input (sketch or class map), else 'RGB'."""
        return "L" if self.label_nc else "RGB"


def parse_factors(text, source: str) -> tuple[int, ...]:
    """pSp's `resize_factors` ("1,2,4,8") as ints."""
    try:
        factors = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        raise CheckpointError(f"{source}: resize_factors {text!r} is not a comma-separated list of integers") from None
    if not factors or min(factors) < 1:
        raise CheckpointError(f"{source}: resize_factors {text!r} must be positive integers")
    return factors


def task_of(ckpt: EncoderCheckpoint) -> PspTask:
    """The task a pSp checkpoint was trained for; its options must agree with its input convolution."""
    opts = ckpt.opts
    weight = ckpt.state_dict.get("encoder.input_layer.0.weight")
    if weight is None:
        raise CheckpointError(f"{ckpt.path}: no encoder.input_layer.0.weight; not a pSp (IR-SE) encoder checkpoint")
    channels = int(weight.shape[1])
    label_nc = int(opts.get("label_nc") or 0)
    input_nc = int(opts.get("input_nc") or 3)
    dataset_type = str(opts.get("dataset_type") or "")
    if channels != input_nc:
        raise CheckpointError(f"{ckpt.path}: opts input_nc is {input_nc} but the encoder's input layer reads "
                              f"{channels} channels; the file is inconsistent")
    factors: tuple[int, ...] = ()
    if label_nc == 1:
        kind = "sketch"
    elif label_nc > 1:
        kind = "segmentation"
    elif opts.get("resize_factors") or "super_resolution" in dataset_type:
        kind = "super-resolution"
        factors = parse_factors(opts.get("resize_factors") or SUPER_RESOLUTION_FACTORS, str(ckpt.path))
    else:
        kind = "photo"
    expected = {"sketch": 1, "segmentation": label_nc}.get(kind, 3)
    if channels != expected:
        raise CheckpointError(f"{ckpt.path}: a {kind} checkpoint (label_nc {label_nc}) should read {expected} "
                              f"channels, its encoder reads {channels}")
    return PspTask(kind, dataset_type, input_nc, label_nc, factors, int(sgtool_arch(ckpt).get("input_size", 256)))


def noise_layers(generator: nn.Module) -> list[nn.Module]:
    """The StyleGAN2 layers with a noise input, in rosinality's `noises.noise_i` order (4 px conv, then two convs
    per resolution); empty for a generator without noise inputs (StyleGAN3)."""
    synthesis = generator.synthesis
    layers = []
    for res in getattr(synthesis, "block_resolutions", ()):
        block = getattr(synthesis, f"b{res}")
        for name in ("conv0", "conv1"):
            layer = getattr(block, name, None)
            if layer is not None and getattr(layer, "use_noise", False):
                layers.append(layer)
    return layers


def mix_codes(codes: torch.Tensor, inject: torch.Tensor, layers, alpha: float | None) -> torch.Tensor:
    """pSp's style mixing: W+ rows `layers` of `codes` replaced by `inject`'s (alpha None) or blended
    `alpha * inject + (1 - alpha) * code`, row by row in the given order (a repeated row is blended again)."""
    out = codes.clone()
    for i in layers:
        out[:, i] = inject[:, i] if alpha is None else alpha * inject[:, i] + (1 - alpha) * out[:, i]
    return out


class PspTranslator(EncoderOverGenerator):
    """A pSp task model: `prepared input -> encode -> W+ codes -> render`."""

    def __init__(self, encoder: nn.Module, generator: nn.Module, latent_avg: torch.Tensor | None, task: PspTask,
                 encoder_type: str, source: str = ""):
        super().__init__(encoder, generator, latent_avg, encoder_type, source)
        self.task = task

    @property
    def device(self) -> torch.device:
        return self.latent_avg.device

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, input_nc, 256, 256] as pSp's inference transform makes it -> W+ codes [B, num_ws, w_dim]."""
        if x.ndim != 4 or x.shape[1] != self.task.input_nc:
            raise ValueError(f"x must be [B, {self.task.input_nc}, H, W], got {tuple(x.shape)}")
        x = fit_input(x.to(self.device, torch.float32), encoder_size(self.encoder))
        return self.encoder(x) + self.latent_avg

    @torch.no_grad()
    def inject_codes(self, z: torch.Tensor) -> torch.Tensor:
        """pSp's injected latents: the mapping of z (no truncation, no latent_avg) repeated to every W+ row."""
        w = self.generator.mapping(z.to(self.device, torch.float32), None, truncation_psi=1.0)
        return w[:, :1].expand(-1, self.num_ws, -1).clone()

    @torch.no_grad()
    def render(self, codes: torch.Tensor, noise: list[torch.Tensor] | None = None, resize: bool = False):
        """Images [B, 3, R, R] (unclamped) of W+ codes: with the stored noise maps (pSp's inference), or with
        `noise` (one [B, 1, r, r] map per noise layer, rosinality's order; pSp's style mixing draws them fresh)."""
        codes = codes.to(self.device, torch.float32)
        if noise is None:
            images = self.generator.synthesis(codes, noise_mode="const")
        else:
            images = torch.cat([self._render_with_noise(codes[i:i + 1], [n[i] for n in noise])
                                for i in range(codes.shape[0])])
        return face_pool(images) if resize else images

    def noise_shapes(self) -> list[tuple[int, int]]:
        return [tuple(layer.noise_const.shape) for layer in noise_layers(self.generator)]

    def _render_with_noise(self, codes: torch.Tensor, maps: list[torch.Tensor]) -> torch.Tensor:
        layers = noise_layers(self.generator)
        if len(maps) != len(layers):
            raise ValueError(f"expected {len(layers)} noise maps, got {len(maps)}")
        kept = [layer.noise_const for layer in layers]
        try:
            for layer, value in zip(layers, maps):
                layer.noise_const = value.reshape(layer.noise_const.shape).to(self.device, torch.float32)
            return self.generator.synthesis(codes, noise_mode="const")
        finally:
            for layer, value in zip(layers, kept):
                layer.noise_const = value


def read_task_checkpoint(path) -> tuple[EncoderCheckpoint, PspTask]:
    """A pSp task checkpoint (weights only) and its task, checked, before any network is built."""
    ckpt = read_encoder_checkpoint(Path(path))
    if any(k.startswith("hypernet.") for k in ckpt.state_dict):
        raise SgtoolError(f"{path} is a HyperStyle checkpoint; translate takes pSp task checkpoints "
                          "(sketch, segmentation, super-resolution, frontalisation, toonify)")
    if ckpt.encoder_type not in SG2_ENCODERS or ckpt.encoder_type == "WEncoder":
        raise CheckpointError(f"{ckpt.path}: encoder_type {ckpt.encoder_type!r} is not a pSp task encoder "
                              "(GradualStyleEncoder; e4e's Encoder4Editing also works)")
    if ckpt.opts.get("learn_in_w"):
        raise CheckpointError(f"{ckpt.path}: a learn_in_w pSp checkpoint (one w per image) is not supported; "
                              "use a W+ (GradualStyleEncoder) checkpoint")
    return ckpt, task_of(ckpt)


def style_rows(ckpt: EncoderCheckpoint) -> int:
    """How many W+ rows the checkpoint's encoder predicts."""
    return _style_count(ckpt.part("encoder"))


def build_translator(ckpt: EncoderCheckpoint, device="cpu", network=None) -> PspTranslator:
    """A pSp task checkpoint as a translator (its own decoder unless `network` replaces it)."""
    task = task_of(ckpt)
    num_ws = style_rows(ckpt)
    generator = resolve_generator(ckpt, network, num_ws, kinds=("stylegan2", "stylegan3"))
    encoder = build_sg2_encoder(ckpt)
    translator = PspTranslator(encoder, generator, latent_offset(ckpt, generator, num_ws), task, ckpt.encoder_type,
                               source=str(ckpt.path))
    return translator.eval().requires_grad_(False).to(device)


def load_translator(path, device="cpu", network=None) -> PspTranslator:
    """Read a pSp task checkpoint (weights only) and build its translator."""
    return build_translator(read_task_checkpoint(path)[0], device=device, network=network)
