"""HyperStyle: a hypernetwork that predicts per-image offsets to the generator's conv weights.

Inversion starts from a W encoder's code (its output + HyperStyle's own latent_avg) and that
code's render. Each iteration feeds cat(target, current render) through a ResNet-34 backbone to a
16x16x512 map; one refinement block per tuned generator layer turns the map into a relative weight
offset delta, accumulated over iterations, and the generator renders with weights W * (1 + delta).

Generator layers are numbered as HyperStyle does: 0 = 4x4 conv, 1 = 4x4 to-RGB, then three per
resolution (upsampling conv, conv, to-RGB). The 512x512 3x3 layers in SHARED_LAYERS use small
conv heads feeding one shared two-matrix hypernetwork (the same weights appear under every such
block's `hypernet.*` keys); the other tuned layers predict one offset per (out, in) channel pair,
repeated over the kernel taps.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ... import kernels
from ...errors import CheckpointError
from .backbones import resnet34_body, resnet34_channels, scaled
from .inverter import INFERENCE_STEPS, InversionStep, encoder_size, face_pool, fit_input
from .loading import EncoderCheckpoint, read_encoder_checkpoint, register_encoder_family, sgtool_arch
from .restyle import EqualLinear
from .sg2_encoders import adopt_state, build_sg2_encoder, embedded_decoder, resolve_generator

SHARED_LAYERS = (0, 2, 3, 5, 6, 8, 9, 11, 12)
HYPERSTYLE_TYPES = ("SharedWeightsHyperNetResNet",)
FEATURE_SPATIAL = 16


def generator_layers(generator) -> list[tuple[nn.Module, bool]]:
    """HyperStyle's layer order over our StyleGAN2 network: (module, is_to_rgb) per index."""
    synthesis = generator.synthesis
    layers = []
    for res in synthesis.block_resolutions:
        block = getattr(synthesis, f"b{res}")
        if res > 4:
            layers.append((block.conv0, False))
        layers.append((block.conv1, False))
        if not hasattr(block, "torgb"):
            raise CheckpointError("HyperStyle needs a StyleGAN2 'skip' generator (a to-RGB layer per block)")
        layers.append((block.torgb, True))
    return layers


class SharedWeightsHypernet(nn.Module):
    """z [B, z_dim] -> kernel [B, out, in, f, f] through two factored matrices (HyperStyle's memory order)."""

    def __init__(self, f_size: int = 3, z_dim: int = 512, out_size: int = 512, in_size: int = 512):
        super().__init__()
        self.f_size, self.z_dim, self.out_size, self.in_size = f_size, z_dim, out_size, in_size
        # N(0, 1/40^2), HyperStyle's initialisation (zeros would leave both factors without gradient).
        self.w1 = nn.Parameter(torch.randn(z_dim, out_size * f_size * f_size) / 40)
        self.b1 = nn.Parameter(torch.randn(out_size * f_size * f_size) / 40)
        self.w2 = nn.Parameter(torch.randn(z_dim, in_size * z_dim) / 40)
        self.b2 = nn.Parameter(torch.randn(in_size * z_dim) / 40)

    def forward(self, z):
        batch = z.shape[0]
        h_in = (torch.matmul(z, self.w2) + self.b2).reshape(batch, self.in_size, self.z_dim)
        h_final = torch.matmul(h_in, self.w1) + self.b1
        # [B, in, out*f*f] read back as [B, out, in, f, f], as the released weights were trained.
        return h_final.reshape(batch, self.out_size, self.in_size, self.f_size, self.f_size)


def _conv_stack(n_channels: int, inner: int, strides: list[int], out_c: int) -> nn.Sequential:
    layers = []
    for i, stride in enumerate(strides):
        last = i == len(strides) - 1
        layers += [nn.Conv2d(n_channels if i == 0 else inner, out_c if last else inner, 3, stride, 1), nn.LeakyReLU()]
    return nn.Sequential(*layers)


class HyperRefinementBlock(nn.Module):
    """Feature map -> code (convs to 1x1, EqualLinear) -> the shared hypernet's kernel offsets."""

    def __init__(self, hypernet: SharedWeightsHypernet, n_channels: int = 512, inner_c: int = 128,
                 spatial: int = FEATURE_SPATIAL):
        super().__init__()
        self.code_dim = hypernet.z_dim
        self.convs = _conv_stack(n_channels, inner_c, [1] + [2] * int(math.log2(spatial)), self.code_dim)
        self.linear = EqualLinear(self.code_dim, self.code_dim)
        self.hypernet = hypernet

    def forward(self, features):
        return self.hypernet(self.linear(self.convs(features).reshape(-1, self.code_dim)))


class RefinementBlock(nn.Module):
    """Feature map -> strided convs -> one offset per (out, in) channel pair.

    3x3 layers pool the last map and repeat the offset over the kernel taps; to-RGB layers (1x1
    kernels) take one more strided conv down to 1x1 and need no pooling, as in the reference.
    """

    def __init__(self, kernel_size: int, in_channels: int, out_channels: int, n_channels: int = 512,
                 inner_c: int = 256, out_c: int = 512, spatial: int = FEATURE_SPATIAL, to_rgb: bool = False):
        super().__init__()
        self.kernel_size, self.in_channels, self.out_channels = kernel_size, in_channels, out_channels
        self.to_rgb = to_rgb
        pools = max(0, int(math.log2(spatial)) - 1 - (0 if to_rgb else 1))
        self.convs = _conv_stack(n_channels, inner_c, [2] * (pools + 1), out_c)
        head = nn.Conv2d(out_c, in_channels * out_channels, kernel_size=1)
        self.output = nn.Sequential(head) if to_rgb else nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), head)

    def forward(self, features):
        x = self.output(self.convs(features))
        if self.to_rgb:
            return x.reshape(-1, self.out_channels, self.in_channels, self.kernel_size, self.kernel_size)
        x = x.reshape(-1, self.out_channels, self.in_channels, 1, 1)
        return x.expand(-1, -1, -1, self.kernel_size, self.kernel_size)


class SharedWeightsHyperNetResNet(nn.Module):
    """ResNet-34 features of cat(target, render) -> {layer index: delta [B, out, in, k, k]}.

    `layer_shapes[i]` = (out, in, k) of generator layer i; `to_rgb` the indices of to-RGB layers.
    `width` scales the backbone and heads (1.0: the released layout, 512-wide everywhere).
    """

    def __init__(self, layer_shapes: dict[int, tuple[int, int, int]], tuned: list[int], n_outputs: int,
                 input_nc: int = 6, to_rgb: tuple[int, ...] = (), width: float = 1.0, input_size: int = 256):
        super().__init__()
        stem = scaled(64, width)
        features = resnet34_channels(width)[-1]
        spatial = input_size // 16
        self.width, self.input_size = width, input_size
        self.conv1 = nn.Conv2d(input_nc, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.PReLU(stem)
        self.body = resnet34_body(width)  # the checkpoint (or ImageNet weights when training) fills it
        shared = [i for i in tuned if i in SHARED_LAYERS]
        out_size, in_size, _ = layer_shapes[shared[0]] if shared else (512, 512, 3)
        self.shared_weight_hypernet = SharedWeightsHypernet(z_dim=scaled(512, width), out_size=out_size,
                                                            in_size=in_size)
        self.tuned_layers = list(tuned)
        blocks = []
        for index in range(n_outputs):
            if index not in tuned:
                blocks.append(None)
            elif index in SHARED_LAYERS:
                blocks.append(HyperRefinementBlock(self.shared_weight_hypernet, features, scaled(128, width), spatial))
            else:
                out_channels, in_channels, k = layer_shapes[index]
                blocks.append(RefinementBlock(k, in_channels, out_channels, features, scaled(256, width),
                                              scaled(512, width), spatial, to_rgb=index in to_rgb))
        self.refinement_blocks = nn.ModuleList(blocks)

    def forward(self, x) -> dict[int, torch.Tensor]:
        features = self.body(self.relu(self.bn1(self.conv1(x))))
        return {i: self.refinement_blocks[i](features) for i in self.tuned_layers}


def _modulated_conv(x, weight, styles, demodulate, up=1, padding=0, resample_filter=None):
    """StyleGAN2's fused modulated conv with a per-sample weight [B, O, I, k, k] (or shared [O, I, k, k])."""
    batch = x.shape[0]
    w = (weight if weight.ndim == 5 else weight.unsqueeze(0)) * styles.reshape(batch, 1, -1, 1, 1)
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(batch, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    x = kernels.conv2d_resample(x, w.reshape(-1, *w.shape[2:]), f=resample_filter, up=up, padding=padding,
                                groups=batch, flip_weight=up == 1)
    return x.reshape(batch, -1, *x.shape[2:])


def _adjusted(layer, delta):
    return layer.weight if delta is None else layer.weight.unsqueeze(0) * (1 + delta)


def synthesize_with_deltas(generator, ws: torch.Tensor, deltas: dict[int, torch.Tensor],
                           noise_mode: str = "const") -> torch.Tensor:
    """Render ws [B, num_ws, w_dim] with weights W * (1 + deltas[layer][b]) per sample (batched, no copies)."""
    from ..stylegan2 import upsample2d

    synthesis = generator.synthesis
    index = iter(range(len(generator_layers(generator))))
    batch = ws.shape[0]
    x = img = None
    w_idx = 0
    for res in synthesis.block_resolutions:
        block = getattr(synthesis, f"b{res}")
        w_iter = iter(ws.narrow(1, w_idx, block.num_conv + block.num_torgb).unbind(dim=1))
        w_idx += block.num_conv
        if block.in_channels == 0:
            x = block.const.unsqueeze(0).repeat(batch, 1, 1, 1)
            convs = [block.conv1]
        else:
            convs = [block.conv0, block.conv1]
        for layer in convs:
            weight = _adjusted(layer, deltas.get(next(index)))
            x = _modulated_conv(x, weight, layer.affine(next(w_iter)), True, up=layer.up, padding=layer.padding,
                                resample_filter=layer.resample_filter)
            if layer.use_noise and noise_mode == "const":
                x = x + layer.noise_const * layer.noise_strength
            elif layer.use_noise and noise_mode == "random":
                x = x + torch.randn(batch, 1, *x.shape[2:], device=x.device) * layer.noise_strength
            x = kernels.bias_act(x, layer.bias, act=layer.activation, gain=layer.act_gain, clamp=layer.conv_clamp)
        if img is not None:
            img = upsample2d(img, block.resample_filter)
        torgb = block.torgb
        weight = _adjusted(torgb, deltas.get(next(index)))
        y = _modulated_conv(x, weight, torgb.affine(next(w_iter)) * torgb.weight_gain, False)
        y = kernels.bias_act(y, torgb.bias, clamp=torgb.conv_clamp)
        img = y if img is None else img + y
    return img


@torch.no_grad()
def adjusted_generator(generator, deltas: dict[int, torch.Tensor], sample: int = 0, metadata: dict | None = None):
    """A copy of `generator` whose tuned weights are W * (1 + delta[sample]): an ordinary generator."""
    adjusted = copy.deepcopy(generator)
    layers = generator_layers(adjusted)
    for index, delta in deltas.items():
        layer = layers[index][0]
        layer.weight.mul_(1 + delta[sample].to(layer.weight))
    adjusted.hyperstyle = dict(metadata or {}, tuned_layers=sorted(deltas))
    return adjusted.eval().requires_grad_(False)


@dataclass
class HyperStyleStep(InversionStep):
    """An inversion step plus the cumulative per-layer weight offsets {layer index: [B, out, in, k, k]}."""

    deltas: dict[int, torch.Tensor] = field(default_factory=dict)
    base_generator: nn.Module | None = None
    previous: torch.Tensor | None = None  # the render (pooled to 256) fed to the hypernet with the target

    def adjusted_generator(self, sample: int = 0):
        return adjusted_generator(self.base_generator, self.deltas, sample,
                                  metadata={"base_generator": getattr(self.base_generator, "source", None)})

    @property
    def generator(self):
        """The adjusted generator (batch of one); use adjusted_generator(i) for image i of a batch."""
        if self.latents.shape[0] != 1:
            raise ValueError(f"this step holds {self.latents.shape[0]} images; use adjusted_generator(i)")
        return self.adjusted_generator(0)


class HyperStyleInverter(nn.Module):
    input_size = 256

    def __init__(self, hypernet: SharedWeightsHyperNetResNet, w_encoder: nn.Module, generator: nn.Module,
                 latent_avg: torch.Tensor, default_steps: int = 5, source: str = "", w_encoder_source: str = ""):
        super().__init__()
        self.hypernet = hypernet
        self.w_encoder = w_encoder
        self.generator = generator
        self.register_buffer("latent_avg", latent_avg)
        self.default_steps = int(default_steps)
        self.family = "hyperstyle"
        self.encoder_type = "SharedWeightsHyperNetResNet"
        self.source = source
        self.w_encoder_source = w_encoder_source

    @property
    def num_ws(self) -> int:
        return self.generator.num_ws

    @torch.no_grad()
    def invert(self, x: torch.Tensor, steps: int | None = None, transform: torch.Tensor | None = None,
               keep_full: bool = False) -> list[HyperStyleStep]:
        """x: [B, 3, 256, 256] in [-1, 1]; one HyperStyleStep per refinement iteration."""
        steps = self.default_steps if steps is None else int(steps)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if transform is not None:
            raise ValueError("StyleGAN2 generators have no input transform; invert aligned crops only")
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (self.input_size, self.input_size):
            raise ValueError(f"x must be [B, 3, {self.input_size}, {self.input_size}], got {tuple(x.shape)}")
        x = x.to(self.latent_avg.device, self.latent_avg.dtype)  # float64 after .double()
        w_feed, feed = encoder_size(self.w_encoder), encoder_size(self.hypernet)
        codes = self.w_encoder(fit_input(x, w_feed)) + self.latent_avg
        x_feed = fit_input(x, feed)
        previous = face_pool(self.generator.synthesis(codes, noise_mode="const"), feed)
        deltas: dict[int, torch.Tensor] = {}
        results = []
        for _ in range(steps):
            predicted = self.hypernet(torch.cat([x_feed, previous], dim=1))
            deltas = {i: d + deltas[i] if i in deltas else d for i, d in predicted.items()}
            full = synthesize_with_deltas(self.generator, codes, deltas)
            results.append(HyperStyleStep(latents=codes, images=face_pool(full),
                                          images_full=full if keep_full else None, deltas=deltas,
                                          base_generator=self.generator, previous=previous))
            previous = results[-1].images if feed == 256 else face_pool(full, feed)
        return results


def layer_shapes(generator) -> dict[int, tuple[int, int, int]]:
    """(out, in, kernel) of every layer HyperStyle can tune, by its index."""
    return {i: (int(m.weight.shape[0]), int(m.weight.shape[1]), int(m.weight.shape[-1]))
            for i, (m, _) in enumerate(generator_layers(generator))}


def build_hypernet(generator, tuned: list[int], input_nc: int = 6, width: float = 1.0, input_size: int = 256,
                   source: str = "HyperStyle") -> SharedWeightsHyperNetResNet:
    """The hypernetwork for `tuned` layers of `generator` (the shared-hypernet layers must agree in shape)."""
    layers = generator_layers(generator)
    bad = [i for i in tuned if not 0 <= i < len(layers)]
    if bad:
        raise CheckpointError(f"{source}: layers {bad} do not exist; the generator has {len(layers)} (0-"
                              f"{len(layers) - 1})")
    shapes = layer_shapes(generator)
    shared = [i for i in tuned if i in SHARED_LAYERS]
    odd = [i for i in shared if shapes[i] != shapes[shared[0]]]
    if odd:
        raise CheckpointError(f"{source}: layers {shared} share one hypernet, which makes {shapes[shared[0]]} "
                              f"(out, in, kernel) offsets, but the generator's layers {odd} are "
                              f"{[shapes[i] for i in odd]}; leave {odd} out of the tuned layers")
    to_rgb = tuple(i for i, (_, is_rgb) in enumerate(layers) if is_rgb)
    return SharedWeightsHyperNetResNet(shapes, tuned, len(layers), input_nc=input_nc, to_rgb=to_rgb, width=width,
                                       input_size=input_size)


def _tuned_layers(ckpt: EncoderCheckpoint, n_outputs: int) -> list[int]:
    stored = sorted({int(m.group(1)) for k in ckpt.state_dict
                     if (m := re.match(r"hypernet\.refinement_blocks\.(\d+)\.", k))})
    requested = str(ckpt.opts.get("layers_to_tune") or "")
    if requested:
        wanted = sorted(int(v) for v in requested.split(",") if v.strip() and int(v) < n_outputs)
        if wanted != stored:
            raise CheckpointError(f"{ckpt.path}: opts layers_to_tune {wanted} disagree with the stored refinement "
                                  f"blocks {stored}; the file is damaged")
    return stored


def find_w_encoder(ckpt: EncoderCheckpoint, w_encoder) -> Path:
    """--w-encoder, else the options' w_encoder_checkpoint_path (as given, or beside the checkpoint)."""
    if w_encoder is not None:
        return Path(w_encoder)
    named = ckpt.opts.get("w_encoder_checkpoint_path")
    candidates = [Path(str(named)), ckpt.path.parent / Path(str(named)).name] if named else []
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    hint = f" (its options name {named})" if named else ""
    raise CheckpointError(f"{ckpt.path} needs its W encoder{hint}; pass the file with --w-encoder "
                          "(e.g. faces_w_encoder.pt from the HyperStyle release)")


def build_hyperstyle(ckpt: EncoderCheckpoint, device="cpu", network=None, w_encoder=None) -> HyperStyleInverter:
    if ckpt.encoder_type not in HYPERSTYLE_TYPES:
        raise CheckpointError(f"{ckpt.path}: HyperStyle type {ckpt.encoder_type!r} is not supported "
                              f"({', '.join(HYPERSTYLE_TYPES)})")
    w_path = find_w_encoder(ckpt, w_encoder)
    if ckpt.latent_avg is None:
        raise CheckpointError(f"{ckpt.path} has no latent_avg; the file is incomplete")
    if network is None:
        generator = embedded_decoder(ckpt)
    else:
        size = int(ckpt.opts.get("output_size") or 1024)
        generator = resolve_generator(ckpt, network, num_ws=2 * int(math.log2(size)) - 2)
    layers = generator_layers(generator)
    tuned = _tuned_layers(ckpt, len(layers))
    arch = sgtool_arch(ckpt)
    state = ckpt.part("hypernet")
    input_nc = int(state["conv1.weight"].shape[1]) if "conv1.weight" in state else 6
    hypernet = adopt_state(lambda: build_hypernet(generator, tuned, input_nc=input_nc, width=arch.get("width", 1.0),
                                                  input_size=arch.get("input_size", 256), source=str(ckpt.path)),
                           state, f"{ckpt.path} (hypernet)")

    w_ckpt = read_encoder_checkpoint(w_path)
    w_type = w_ckpt.encoder_type or ckpt.opts.get("w_encoder_type")
    encoder = build_sg2_encoder(w_ckpt, w_type)
    if encoder.style_count != generator.num_ws:
        raise CheckpointError(f"W encoder {w_path} predicts {encoder.style_count} styles; the generator of "
                              f"{ckpt.path} takes {generator.num_ws}")
    # HyperStyle adds its own latent_avg to the W encoder's output (not the W encoder's).
    latent_avg = ckpt.latent_avg.detach().to(torch.float32).contiguous().reshape(-1, generator.w_dim)
    latent_avg = latent_avg.expand(generator.num_ws, -1).clone()
    inverter = HyperStyleInverter(hypernet.eval().requires_grad_(False), encoder, generator, latent_avg,
                                  default_steps=INFERENCE_STEPS["hyperstyle"], source=str(ckpt.path),
                                  w_encoder_source=str(w_path))
    return inverter.eval().requires_grad_(False).to(device)


def load_hyperstyle(path, device="cpu", network=None, w_encoder=None) -> HyperStyleInverter:
    """A HyperStyle checkpoint with its W encoder (`w_encoder`, else the file its options name)."""
    return build_hyperstyle(read_encoder_checkpoint(path), device=device, network=network, w_encoder=w_encoder)


def _hyperstyle_matches(ckpt: EncoderCheckpoint) -> bool:
    return ckpt.encoder_type in HYPERSTYLE_TYPES or any(k.startswith("hypernet.") for k in ckpt.state_dict)


_hyperstyle_matches.encoder_types = HYPERSTYLE_TYPES

register_encoder_family("hyperstyle", _hyperstyle_matches, build_hyperstyle)
