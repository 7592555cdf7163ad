"""ReStyle encoders (pSp and e4e variants) as released for StyleGAN3 by stylegan3-editing.

Each maps a 6-channel input (target image + current reconstruction, 256x256 in [-1, 1]) to a
residual W+ code [B, n_styles, 512]: every style comes from the backbone's final 16x16 feature map
through its own map-to-style block. The pSp variant predicts every style independently; the e4e
variant predicts one base code plus per-style offsets.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .backbones import ir_body, ir_input_layer, ir_stage_channels, resnet34_body, resnet34_channels, scaled


class EqualLinear(nn.Module):
    """Linear layer with the weight scale applied at run time (rosinality's StyleGAN2 naming)."""

    def __init__(self, in_dim: int, out_dim: int, lr_mul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, x):
        return F.linear(x, self.weight * self.scale, bias=self.bias * self.lr_mul)


class MapToStyle(nn.Module):
    """Strided 3x3 convs down to 1x1, then an EqualLinear: one style vector from a feature map."""

    def __init__(self, in_channels: int = 512, out_channels: int = 512, spatial: int = 16,
                 inner_channels: int | None = None):
        super().__init__()
        inner = inner_channels or out_channels
        self.inner_channels = inner
        layers = []
        for i in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(in_channels if i == 0 else inner, inner, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(inner, out_channels)

    def forward(self, x):
        return self.linear(self.convs(x).reshape(-1, self.inner_channels))


class _StyleHeads(nn.Module):
    """Shared parts: a backbone to a (input/16)^2 map, then one MapToStyle per style.

    `width` scales every channel count (1.0: the released layout), `style_dim` is the generator's
    w_dim (512 for every released network) and `input_size` the side of the encoder's input.
    The e4e variant trains progressively: only the first `active_styles` styles get their offset.
    """

    progressive = False

    def __init__(self, n_styles: int, feature_channels: int, width: float, style_dim: int, input_size: int):
        super().__init__()
        self.style_count = n_styles
        self.style_dim = style_dim
        self.width = width
        self.input_size = input_size
        self.active_styles: int | None = None
        spatial = input_size // 16
        self.styles = nn.ModuleList(MapToStyle(feature_channels, style_dim, spatial, scaled(512, width))
                                    for _ in range(n_styles))

    def features(self, x):
        raise NotImplementedError

    def forward(self, x):
        feats = self.features(x)
        if not self.progressive:
            return torch.stack([head(feats) for head in self.styles], dim=1)
        # e4e: a base code copied to every style, each later style adds its own offset.
        base = self.styles[0](feats)
        codes = base.unsqueeze(1).repeat(1, self.style_count, 1)
        active = self.style_count if self.active_styles is None else self.active_styles
        for i in range(1, active):
            codes[:, i] += self.styles[i](feats)
        return codes


class _IRSEStyleEncoder(_StyleHeads):
    def __init__(self, n_styles: int = 16, input_nc: int = 6, num_layers: int = 50, squeeze_excite: bool = True,
                 width: float = 1.0, style_dim: int = 512, input_size: int = 256):
        super().__init__(n_styles, ir_stage_channels(width)[-1], width, style_dim, input_size)
        self.input_layer = ir_input_layer(input_nc, width)
        self.body = ir_body(num_layers, squeeze_excite, width)

    def features(self, x):
        return self.body(self.input_layer(x))


class _ResNetStyleEncoder(_StyleHeads):
    def __init__(self, n_styles: int = 16, input_nc: int = 6, width: float = 1.0, style_dim: int = 512,
                 input_size: int = 256):
        super().__init__(n_styles, resnet34_channels(width)[-1], width, style_dim, input_size)
        stem = scaled(64, width)
        self.conv1 = nn.Conv2d(input_nc, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.PReLU(stem)
        self.body = resnet34_body(width)

    def features(self, x):
        return self.body(self.relu(self.bn1(self.conv1(x))))


class BackboneEncoder(_IRSEStyleEncoder):
    """ReStyle-pSp over IR-SE50."""


class ProgressiveBackboneEncoder(_IRSEStyleEncoder):
    """ReStyle-e4e over IR-SE50."""

    progressive = True


class ResNetBackboneEncoder(_ResNetStyleEncoder):
    """ReStyle-pSp over ResNet-34."""


class ResNetProgressiveBackboneEncoder(_ResNetStyleEncoder):
    """ReStyle-e4e over ResNet-34."""

    progressive = True


# The checkpoint's `opts["encoder_type"]` -> module class (and which family it belongs to).
RESTYLE_ENCODERS = {
    "BackboneEncoder": ("psp", BackboneEncoder),
    "ResNetBackboneEncoder": ("psp", ResNetBackboneEncoder),
    "ProgressiveBackboneEncoder": ("e4e", ProgressiveBackboneEncoder),
    "ResNetProgressiveBackboneEncoder": ("e4e", ResNetProgressiveBackboneEncoder),
}
