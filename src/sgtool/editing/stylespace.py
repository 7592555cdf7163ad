"""StyleSpace: the per-layer styles (affine outputs) that modulate each convolution.

S is the list of every style affine's output, in the order the synthesis network uses them:
- StyleGAN3: `synthesis.input.affine` first (4 values: the rotation and translation of the
  Fourier features; included so that S alone determines the image), then each SynthesisLayer's
  affine (L0 ... the final toRGB layer). S layer k reads style input w[k].
- StyleGAN2: per block, conv0 (absent at 4x4), conv1 and torgb. A block's torgb reads the
  same w as the next block's first conv, so there are more S layers than style inputs.
Values are the raw affine outputs, before the toRGB weight gain (as in the StyleSpace paper).

Rendering from S leaves the model untouched: forward hooks on the affine modules replace each
output with the given styles. Styles captured from a W+ render and fed back unchanged therefore
reproduce that render bit for bit.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from ..errors import SgtoolError


@dataclass(frozen=True)
class StyleLayer:
    index: int
    name: str
    module: torch.nn.Module  # the affine FullyConnectedLayer
    w_index: int  # which style input (row of W+) feeds it
    is_torgb: bool
    is_geometry: bool = False  # StyleGAN3's input affine: rotation/translation, not channel scales

    @property
    def channels(self) -> int:
        return self.module.out_features


def style_layers(generator) -> list[StyleLayer]:
    synthesis = generator.synthesis
    layers: list[StyleLayer] = []
    if generator.kind == "stylegan3":
        layers.append(StyleLayer(0, "input", synthesis.input.affine, 0, False, True))
        for i, name in enumerate(synthesis.layer_names):
            layer = getattr(synthesis, name)
            layers.append(StyleLayer(len(layers), name, layer.affine, i + 1, bool(layer.is_torgb)))
        return layers
    w_index = 0
    for res in synthesis.block_resolutions:
        block = getattr(synthesis, f"b{res}")
        index = w_index
        for conv in ("conv0", "conv1"):
            if hasattr(block, conv):
                layers.append(StyleLayer(len(layers), f"b{res}.{conv}", getattr(block, conv).affine, index, False))
                index += 1
        if hasattr(block, "torgb"):
            layers.append(StyleLayer(len(layers), f"b{res}.torgb", block.torgb.affine, w_index + block.num_conv, True))
        w_index += block.num_conv
    return layers


@contextlib.contextmanager
def _hooks(layers: Sequence[StyleLayer], hook_for) -> Iterator[None]:
    handles = [layer.module.register_forward_hook(hook_for(layer)) for layer in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _synthesis_kwargs(generator, transform) -> dict:
    if transform is None:
        return {}
    if generator.kind != "stylegan3":
        raise SgtoolError("a landmarks transform needs a StyleGAN3 network (StyleGAN2 has no input transform); "
                          "drop --transforms or pass --aligned")
    return {"transform": torch.as_tensor(transform, dtype=torch.float32)}


@torch.no_grad()
def capture_styles(generator, ws: torch.Tensor, transform=None, noise_mode: str = "const"):
    """Render W+ codes and record S on the way: (styles, images); styles[k] is [N, channels_k]."""
    layers = style_layers(generator)
    captured: dict[int, torch.Tensor] = {}

    def hook_for(layer):
        def hook(module, inputs, output):
            captured[layer.index] = output.detach().clone()
        return hook

    with _hooks(layers, hook_for):
        images = generator.synthesis(ws, noise_mode=noise_mode, **_synthesis_kwargs(generator, transform))
    return [captured[layer.index] for layer in layers], images


@torch.no_grad()
def render_styles(generator, styles: Sequence[torch.Tensor], transform=None, noise_mode: str = "const"):
    """Render from S alone: every affine's output is replaced by the given styles."""
    layers = style_layers(generator)
    if len(styles) != len(layers):
        raise SgtoolError(f"got {len(styles)} style layers; this generator has {len(layers)}")
    batch = styles[0].shape[0]
    for layer, style in zip(layers, styles):
        if tuple(style.shape) != (batch, layer.channels):
            raise SgtoolError(f"style layer {layer.name} needs shape [{batch}, {layer.channels}], "
                              f"got {list(style.shape)}")

    def hook_for(layer):
        def hook(module, inputs, output):
            return styles[layer.index].to(output.device, output.dtype)
        return hook

    # The ws only reach the network through the affines, whose outputs the hooks replace.
    device = next(generator.parameters()).device
    placeholder = torch.zeros([batch, generator.num_ws, generator.w_dim], device=device)
    with _hooks(layers, hook_for):
        return generator.synthesis(placeholder, noise_mode=noise_mode, **_synthesis_kwargs(generator, transform))


@dataclass
class StyleEdit:
    layer: str  # index or name as typed
    channel: int
    strength: float
    index: int | None = None  # resolved S layer index

    @property
    def label(self) -> str:
        return f"s{self.index if self.index is not None else self.layer}c{self.channel}{self.strength:+g}"


def parse_style(text: str) -> StyleEdit:
    """'3:12=+5' or 'L3_36_32:12=+5' or 'b16.conv1:7=-2' -> StyleEdit."""
    m = re.fullmatch(r"\s*([^:=\s]+):(\d+)\s*=\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*", str(text))
    if not m:
        raise SgtoolError(f"--style expects LAYER:CHANNEL=STRENGTH such as 3:12=+5 or L3_36_32:12=+5, got {text!r}")
    return StyleEdit(m.group(1), int(m.group(2)), float(m.group(3)))


def resolve_style_edit(edit: StyleEdit, layers: Sequence[StyleLayer]) -> StyleEdit:
    names = {layer.name: layer.index for layer in layers}
    if edit.layer.isdigit():
        index = int(edit.layer)
        if index >= len(layers):
            raise SgtoolError(f"--style layer {index} is out of range: S layers are 0-{len(layers) - 1} "
                              f"({', '.join(names)})")
    elif edit.layer in names:
        index = names[edit.layer]
    else:
        raise SgtoolError(f"unknown style layer {edit.layer!r}; known: {', '.join(names)} (or 0-{len(layers) - 1})")
    if not 0 <= edit.channel < layers[index].channels:
        raise SgtoolError(f"--style channel {edit.channel} is out of range: layer {layers[index].name} has channels "
                          f"0-{layers[index].channels - 1}")
    return StyleEdit(edit.layer, edit.channel, edit.strength, index)


def apply_style_edits(styles: Sequence[torch.Tensor], edits: Sequence[StyleEdit],
                      scale: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Add strength (times `scale[layer][channel]` when given, e.g. the channel's std) to S channels.

    Untouched layers are returned as the same tensors, so a zero edit changes nothing.
    """
    out = list(styles)
    for edit in edits:
        if edit.index is None:
            raise ValueError("resolve the style edit against the generator's layers first")
        if edit.strength == 0:
            continue
        step = edit.strength * (float(scale[edit.index][edit.channel]) if scale is not None else 1.0)
        layer = out[edit.index].clone()
        layer[:, edit.channel] += step
        out[edit.index] = layer
    return out


@torch.no_grad()
def style_std(generator, num_samples: int = 2000, seed: int = 0) -> list[torch.Tensor]:
    """Per-channel standard deviation of each S layer over mapped random z (the StyleSpace unit)."""
    device = next(generator.parameters()).device
    rng = np.random.RandomState(seed)
    z = torch.from_numpy(rng.randn(num_samples, generator.z_dim).astype(np.float32)).to(device)
    c = None
    if generator.c_dim:
        c = torch.zeros([num_samples, generator.c_dim], device=device)
        c[torch.arange(num_samples), torch.from_numpy(rng.randint(0, generator.c_dim, num_samples))] = 1
    w = generator.mapping(z, c)[:, 0]
    return [layer.module(w).std(dim=0).cpu() for layer in style_layers(generator)]
