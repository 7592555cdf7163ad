"""StyleGAN2 encoders as released with pSp (GradualStyleEncoder), e4e (Encoder4Editing) and HyperStyle (WEncoder),
plus ReStyle trained on StyleGAN2 (the ReStyle encoders of `restyle.py` over a rosinality decoder).

All three read a 3-channel 256x256 image in [-1, 1] with an IR-SE50 backbone. pSp and e4e tap the
backbone at three depths (64x64x128, 32x32x256, 16x16x512), merge them top-down like a feature
pyramid, and map each level to its own W+ styles: 3 coarse styles from the 16x16 map, 4 middle
ones from 32x32 and the rest from 64x64. pSp predicts every style independently; e4e predicts one
base code w0 and adds a per-style offset. WEncoder pools the last map into a single w.

Checkpoints hold `encoder.*` weights, the rosinality-layout `decoder.*` generator they were trained
with, `opts` and `latent_avg`; the encoder output is added to latent_avg (start_from_latent_avg) and
rendered by the embedded decoder unless another generator is given.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import CheckpointError, SgtoolError
from .backbones import IR_STAGES, ir_body, ir_input_layer, ir_stage_channels
from .inverter import INFERENCE_STEPS, InversionStep, ReStyleInverter, encoder_size, face_pool, fit_input
from .loading import EncoderCheckpoint, encoder_kwargs, register_encoder_family, sgtool_arch
from .restyle import RESTYLE_ENCODERS, EqualLinear, MapToStyle

COARSE_STYLES = 3
MIDDLE_STYLES_END = 7
# pSp/e4e take their pyramid from these body units (the ends of IR-50's stages 2-4; the
# originals use the same indices for every depth).
PYRAMID_TAPS = (6, 20, 23)


def upsample_add(top: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    return F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral


class _IRSEBackbone(nn.Module):
    def __init__(self, n_styles: int, input_nc: int, num_layers: int, squeeze_excite: bool, width: float,
                 style_dim: int, input_size: int):
        super().__init__()
        self.style_count = n_styles
        self.style_dim = style_dim
        self.width = width
        self.input_size = input_size
        self.input_layer = ir_input_layer(input_nc, width)
        self.body = ir_body(num_layers, squeeze_excite, width)


class GradualStyleEncoder(_IRSEBackbone):
    """pSp's encoder: every W+ style from its pyramid level independently."""

    progressive = False

    def __init__(self, n_styles: int, input_nc: int = 3, num_layers: int = 50, squeeze_excite: bool = True,
                 width: float = 1.0, style_dim: int = 512, input_size: int = 256):
        super().__init__(n_styles, input_nc, num_layers, squeeze_excite, width, style_dim, input_size)
        _, c_fine, c_middle, c_top = ir_stage_channels(width)
        self.active_styles: int | None = None  # e4e's progressive training (pSp ignores it)
        self.styles = nn.ModuleList(MapToStyle(c_top, style_dim, self.style_spatial(i), c_top)
                                    for i in range(n_styles))
        self.latlayer1 = nn.Conv2d(c_middle, c_top, kernel_size=1)
        self.latlayer2 = nn.Conv2d(c_fine, c_top, kernel_size=1)

    def style_spatial(self, index: int) -> int:
        """Side of the map a style reads: 1/16, 1/8 or 1/4 of the input (16, 32, 64 at 256)."""
        base = self.input_size // 16
        return base if index < COARSE_STYLES else 2 * base if index < MIDDLE_STYLES_END else 4 * base

    def pyramid(self, x):
        """The three backbone taps: (64x64x128, 32x32x256, 16x16x512) for a 256 input."""
        x = self.input_layer(x)
        taps = {}
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in PYRAMID_TAPS:
                taps[i] = x
        return (taps[t] for t in PYRAMID_TAPS)

    def forward(self, x):
        fine, middle, coarse = self.pyramid(x)
        codes = [self.styles[j](coarse) for j in range(min(COARSE_STYLES, self.style_count))]
        p2 = upsample_add(coarse, self.latlayer1(middle))
        codes += [self.styles[j](p2) for j in range(COARSE_STYLES, min(MIDDLE_STYLES_END, self.style_count))]
        p1 = upsample_add(p2, self.latlayer2(fine))
        codes += [self.styles[j](p1) for j in range(MIDDLE_STYLES_END, self.style_count)]
        return torch.stack(codes, dim=1)


class Encoder4Editing(GradualStyleEncoder):
    """e4e's encoder: a base w0 from the coarse level, copied to every style, plus per-style offsets."""

    progressive = True

    def forward(self, x):
        fine, middle, coarse = self.pyramid(x)
        w0 = self.styles[0](coarse)
        codes = w0.unsqueeze(1).repeat(1, self.style_count, 1)
        features = coarse
        active = self.style_count if self.active_styles is None else self.active_styles
        for i in range(1, active):
            if i == COARSE_STYLES:
                p2 = upsample_add(coarse, self.latlayer1(middle))
                features = p2
            elif i == MIDDLE_STYLES_END:
                features = upsample_add(p2, self.latlayer2(fine))
            codes[:, i] += self.styles[i](features)
        return codes


class WEncoder(_IRSEBackbone):
    """HyperStyle's W encoder: global-average-pooled last map -> one w, repeated to every style."""

    def __init__(self, n_styles: int, input_nc: int = 3, num_layers: int = 50, squeeze_excite: bool = True,
                 width: float = 1.0, style_dim: int = 512, input_size: int = 256):
        super().__init__(n_styles, input_nc, num_layers, squeeze_excite, width, style_dim, input_size)
        self.feature_channels = ir_stage_channels(width)[-1]
        self.output_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = EqualLinear(self.feature_channels, style_dim)

    def forward(self, x):
        x = self.output_pool(self.body(self.input_layer(x))).reshape(-1, self.feature_channels)
        return self.linear(x).unsqueeze(1).repeat(1, self.style_count, 1)


SG2_ENCODERS = {"GradualStyleEncoder": ("psp", GradualStyleEncoder),
                "Encoder4Editing": ("e4e", Encoder4Editing),
                "WEncoder": ("w", WEncoder)}


def _backbone_config(state: dict, source: str) -> tuple[int, int, bool]:
    """(input channels, IR depth, squeeze-excite) from the encoder's weights."""
    first = state.get("input_layer.0.weight")
    if first is None:
        raise CheckpointError(f"{source}: encoder weights lack input_layer.0 (not an IR-SE encoder)")
    units = {int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.", k))}
    depth = next((d for d, stages in IR_STAGES.items() if sum(s.num_units for s in stages) == len(units)), None)
    if depth is None:
        raise CheckpointError(f"{source}: {len(units)} backbone units match no IR depth (50, 100, 152)")
    squeeze_excite = any(k.startswith("body.0.res_layer.5.") for k in state)
    return int(first.shape[1]), depth, squeeze_excite


def adopt_state(factory, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Build `factory()` on the meta device and adopt the checkpoint's tensors as its weights (strict).

    Skips random initialisation and copies of these large nets. Tensors are made contiguous float32
    first (checkpoints may hold strided views); a tensor stored under several names (HyperStyle's
    shared hypernet) is converted once and stays shared, as in the original module.
    """
    with torch.device("meta"):
        module = factory()
    ours = module.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    wrong = sorted(k for k in set(ours) & set(state) if tuple(ours[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{label}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                 for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                 if names]
        raise CheckpointError(f"{source} does not match its architecture ({'; '.join(parts)})")
    converted: dict[tuple, torch.Tensor] = {}
    adopted = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride(),
               tensor.dtype)
        if key not in converted:
            value = tensor.detach().to("cpu")
            value = value.to(torch.float32) if value.is_floating_point() else value
            converted[key] = value.contiguous()
        adopted[name] = converted[key]
    module.load_state_dict(adopted, strict=True, assign=True)
    return module


def _style_count(state: dict) -> int:
    return len({int(m.group(1)) for k in state if (m := re.match(r"styles\.(\d+)\.", k))})


def build_sg2_encoder(ckpt: EncoderCheckpoint, encoder_type: str | None = None) -> nn.Module:
    """The encoder module of a pSp/e4e/W-encoder checkpoint, weights loaded (strict)."""
    encoder_type = encoder_type or ckpt.encoder_type
    if encoder_type not in SG2_ENCODERS:
        raise CheckpointError(f"{ckpt.path}: encoder_type {encoder_type!r} is not a StyleGAN2 pSp/e4e encoder "
                              f"({', '.join(SG2_ENCODERS)})")
    state = ckpt.part("encoder")
    source = f"{ckpt.path} (encoder)"
    input_nc, depth, squeeze_excite = _backbone_config(state, source)
    arch = sgtool_arch(ckpt)
    if encoder_type == "WEncoder":
        size = int(ckpt.opts.get("output_size") or ckpt.opts.get("stylegan_size") or 1024)
        n_styles = int(arch.get("n_styles") or 2 * size.bit_length() - 4)  # 2 * log2(size) - 2
    else:
        n_styles = _style_count(state)
    cls = SG2_ENCODERS[encoder_type][1]
    encoder = adopt_state(lambda: cls(n_styles, input_nc=input_nc, num_layers=depth, squeeze_excite=squeeze_excite,
                                      **encoder_kwargs(ckpt)), state, source)
    return encoder.eval().requires_grad_(False)


def embedded_decoder(ckpt: EncoderCheckpoint):
    """The generator stored as `decoder.*`: rosinality's layout (latent_avg row 0 as its w_avg), or NVIDIA's
    names for generators rosinality cannot express (StyleGAN3, as sgtool's trainer writes them)."""
    from ..factory import generator_from_state_dict
    from ..rosinality import generator_from_rosinality, is_rosinality_state

    state = ckpt.part("decoder")
    if not state:
        raise CheckpointError(f"{ckpt.path} holds no decoder weights; pass the generator with --network")
    if any(k.startswith("mapping.") for k in state):
        state = {k: v for k, v in state.items() if k != "synthesis.input.transform"}
        generator = generator_from_state_dict(state, source=f"{ckpt.path} (decoder)")
        generator.source = f"{ckpt.path} (decoder)"
        return generator.eval().requires_grad_(False)
    if not is_rosinality_state(state):
        raise CheckpointError(f"{ckpt.path}: the embedded decoder is not in rosinality's StyleGAN2 layout")
    generator = generator_from_rosinality(state, ckpt.latent_avg, source=f"{ckpt.path} (decoder)")
    generator.source = f"{ckpt.path} (decoder)"
    return generator.eval().requires_grad_(False)


def resolve_generator(ckpt: EncoderCheckpoint, network, num_ws: int, kinds: tuple[str, ...] = ("stylegan2",)):
    """--network (path or module) or the embedded decoder, checked against the encoder's styles."""
    from ..loading import load_generator

    if network is None:
        generator = embedded_decoder(ckpt)
    else:
        generator = network if isinstance(network, nn.Module) else load_generator(network)
    style_dim = int(sgtool_arch(ckpt).get("style_dim", 512))
    if generator.kind not in kinds or generator.num_ws != num_ws or generator.w_dim != style_dim:
        raise CheckpointError(f"the generator ({getattr(generator, 'source', 'network')}: {generator.kind}, "
                              f"{generator.num_ws} x {generator.w_dim} styles) does not fit the encoder in "
                              f"{ckpt.path} ({' or '.join(kinds)}, {num_ws} x {style_dim} styles)")
    return generator.eval().requires_grad_(False)


def latent_offset(ckpt: EncoderCheckpoint, generator, num_ws: int) -> torch.Tensor | None:
    """What the originals add to the encoder output: latent_avg per style, or nothing."""
    if not ckpt.opts.get("start_from_latent_avg", True):
        return None
    avg = ckpt.latent_avg if ckpt.latent_avg is not None else generator.mapping.w_avg
    avg = avg.detach().to(torch.float32).contiguous().reshape(-1, generator.w_dim)
    if avg.shape[0] not in (1, num_ws):
        raise CheckpointError(f"{ckpt.path}: latent_avg has {avg.shape[0]} rows; expected 1 or {num_ws}")
    return avg.expand(num_ws, -1).clone()


class EncoderOverGenerator(nn.Module):
    """A pSp-family encoder whose codes (encoder(x) + latent_avg) a generator renders."""

    def __init__(self, encoder: nn.Module, generator: nn.Module, latent_avg: torch.Tensor | None, encoder_type: str,
                 source: str = ""):
        super().__init__()
        self.encoder = encoder
        self.generator = generator
        self.register_buffer("latent_avg", latent_avg if latent_avg is not None
                             else torch.zeros(encoder.style_count, generator.w_dim))
        self.encoder_type = encoder_type
        self.source = source

    @property
    def num_ws(self) -> int:
        return self.encoder.style_count


class SG2EncoderInverter(EncoderOverGenerator):
    """Single-pass pSp/e4e inversion: codes = encoder(x) + latent_avg, rendered with noise_mode='const'."""

    input_size = 256
    default_steps = 1

    def __init__(self, encoder: nn.Module, generator: nn.Module, latent_avg: torch.Tensor | None, family: str,
                 encoder_type: str, source: str = ""):
        super().__init__(encoder, generator, latent_avg, encoder_type, source)
        self.family = family

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (self.input_size, self.input_size):
            raise ValueError(f"x must be [B, 3, {self.input_size}, {self.input_size}], got {tuple(x.shape)}")
        return x.to(self.latent_avg.device, torch.float32)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """W+ codes [B, num_ws, 512] (latent_avg included)."""
        return self.encoder(fit_input(self.check_input(x), encoder_size(self.encoder))) + self.latent_avg

    @torch.no_grad()
    def invert(self, x: torch.Tensor, steps: int | None = None, transform: torch.Tensor | None = None,
               keep_full: bool = False) -> list[InversionStep]:
        """One step (pSp/e4e are single-pass). `transform` is refused: StyleGAN2 has no input transform."""
        if steps not in (None, 1):
            raise SgtoolError(f"{self.source} is a single-pass {self.family} encoder: --steps must be 1 (or left "
                              f"out), got {steps}")
        if transform is not None:
            raise ValueError("StyleGAN2 generators have no input transform; invert aligned crops only")
        codes = self.encode(x)
        full = self.generator.synthesis(codes, noise_mode="const")
        return [InversionStep(latents=codes, images=face_pool(full), images_full=full if keep_full else None)]


def _sg2_matches(ckpt: EncoderCheckpoint) -> bool:
    return ckpt.encoder_type in ("GradualStyleEncoder", "Encoder4Editing")


_sg2_matches.encoder_types = ("GradualStyleEncoder", "Encoder4Editing")


def build_sg2_inverter(ckpt: EncoderCheckpoint, device="cpu", network=None) -> SG2EncoderInverter:
    first = ckpt.state_dict.get("encoder.input_layer.0.weight")
    if first is not None and first.shape[1] != 3:
        raise CheckpointError(f"{ckpt.path}: this encoder reads {first.shape[1]}-channel inputs (a conditional "
                              "pSp task), not RGB photos; run it with `sgtool translate`")
    # The generator first: a mismatch is reported before the (slow) backbone is built.
    # pSp / e4e also encode into StyleGAN3's W+ (sgtool's trainer writes those with an NVIDIA-layout decoder).
    generator = resolve_generator(ckpt, network, _style_count(ckpt.part("encoder")), kinds=("stylegan2", "stylegan3"))
    encoder = build_sg2_encoder(ckpt)
    family = SG2_ENCODERS[ckpt.encoder_type][0]
    inverter = SG2EncoderInverter(encoder, generator, latent_offset(ckpt, generator, encoder.style_count), family,
                                  ckpt.encoder_type, source=str(ckpt.path))
    return inverter.eval().requires_grad_(False).to(device)


register_encoder_family("stylegan2-psp-e4e", _sg2_matches, build_sg2_inverter)


def _restyle_sg2_matches(ckpt: EncoderCheckpoint) -> bool:
    """ReStyle trained on StyleGAN2: the StyleGAN3 release's encoder layout with a rosinality decoder."""
    if ckpt.encoder_type not in RESTYLE_ENCODERS:
        return False
    if any(k.startswith("decoder.") for k in ckpt.state_dict):
        return "decoder.input.input" in ckpt.state_dict or "decoder.synthesis.b4.const" in ckpt.state_dict
    return _style_count(ckpt.part("encoder")) != 16  # no decoder: 16 styles is StyleGAN3's, the rest StyleGAN2's


_restyle_sg2_matches.encoder_types = tuple(RESTYLE_ENCODERS)


def build_restyle_sg2(ckpt: EncoderCheckpoint, device="cpu", network=None) -> ReStyleInverter:
    """ReStyle-pSp/e4e over StyleGAN2: the same iterative inverter as for StyleGAN3, with a rosinality decoder."""
    family, encoder_cls = RESTYLE_ENCODERS[ckpt.encoder_type]
    state = ckpt.part("encoder")
    first = state.get("input_layer.0.weight", state.get("conv1.weight"))
    if first is None or first.shape[1] != 6:
        raise CheckpointError(f"{ckpt.path}: a ReStyle encoder takes 6 input channels (image + reconstruction); "
                              "this file's input convolution is missing or different")
    n_styles = _style_count(state)
    generator = resolve_generator(ckpt, network, n_styles)
    encoder = adopt_state(lambda: encoder_cls(n_styles=n_styles, input_nc=6, **encoder_kwargs(ckpt)), state,
                          f"{ckpt.path} (encoder)")
    avg = ckpt.latent_avg if ckpt.latent_avg is not None else generator.mapping.w_avg
    avg = avg.detach().to(torch.float32).contiguous().reshape(-1, generator.w_dim)
    # ReStyle repeats one w_avg per style when training from a StyleGAN2 checkpoint.
    if not torch.equal(avg, avg[:1].expand_as(avg)):
        raise CheckpointError(f"{ckpt.path}: latent_avg rows differ per style; expected one repeated w_avg")
    inverter = ReStyleInverter(encoder.eval().requires_grad_(False), generator, avg[0], family, ckpt.encoder_type,
                               default_steps=INFERENCE_STEPS["restyle-stylegan2"], source=str(ckpt.path))
    return inverter.eval().requires_grad_(False).to(device)


register_encoder_family("restyle-stylegan2", _restyle_sg2_matches, build_restyle_sg2)
