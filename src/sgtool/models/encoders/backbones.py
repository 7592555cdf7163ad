"""Encoder backbones: IR-SE50 (ArcFace's residual net, as used by pSp/e4e/ReStyle) and ResNet-34.

Module and parameter names follow the released checkpoints (`input_layer.*`, `body.N.res_layer.*`,
`body.N.shortcut_layer.*`, `output_layer.*` for IR-SE; torchvision's BasicBlock names for ResNet-34),
so their state dicts load with strict=True.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F


class Stage(NamedTuple):
    in_channels: int
    depth: int
    num_units: int


def scaled(channels: int, width: float) -> int:
    """A layer's channels at a width multiplier (1.0: the released networks; smaller: tiny test and
    experiment encoders that no reference code can load)."""
    return max(1, int(round(channels * width)))


# Depth -> four stages; the first unit of each stage halves the resolution.
IR_STAGES = {
    50: (Stage(64, 64, 3), Stage(64, 128, 4), Stage(128, 256, 14), Stage(256, 512, 3)),
    100: (Stage(64, 64, 3), Stage(64, 128, 13), Stage(128, 256, 30), Stage(256, 512, 3)),
    152: (Stage(64, 64, 3), Stage(64, 128, 8), Stage(128, 256, 36), Stage(256, 512, 3)),
}


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=False)

    def forward(self, x):
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(scale))))
        return x * scale


class IRUnit(nn.Module):
    """Pre-activation residual unit (BN-conv-PReLU-conv-BN[-SE]) with a strided shortcut."""

    def __init__(self, in_channels: int, depth: int, stride: int, squeeze_excite: bool):
        super().__init__()
        if in_channels == depth:
            # A 1x1 max-pool with stride is plain subsampling; keeping the module keeps names aligned.
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channels, depth, 1, stride, bias=False),
                                                nn.BatchNorm2d(depth))
        layers = [nn.BatchNorm2d(in_channels), nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False), nn.PReLU(depth),
                  nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth)]
        if squeeze_excite:
            layers.append(SqueezeExcite(depth, 16))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


def ir_stage_channels(width: float = 1.0) -> tuple[int, int, int, int]:
    """Output channels of the four IR stages (64, 128, 256, 512 at width 1)."""
    return tuple(scaled(c, width) for c in (64, 128, 256, 512))


def ir_body(num_layers: int = 50, squeeze_excite: bool = True, width: float = 1.0) -> nn.Sequential:
    """The residual units of IR(-SE)-50/100/152: 64 channels at full input size -> 512 at 1/16."""
    if num_layers not in IR_STAGES:
        raise ValueError(f"IR backbone depth must be one of {sorted(IR_STAGES)}, got {num_layers}")
    units = []
    for stage in IR_STAGES[num_layers]:
        c_in, depth = scaled(stage.in_channels, width), scaled(stage.depth, width)
        units.append(IRUnit(c_in, depth, 2, squeeze_excite))
        units.extend(IRUnit(depth, depth, 1, squeeze_excite) for _ in range(stage.num_units - 1))
    return nn.Sequential(*units)


def ir_input_layer(in_channels: int, width: float = 1.0) -> nn.Sequential:
    channels = scaled(64, width)
    return nn.Sequential(nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels),
                         nn.PReLU(channels))


class ArcFaceIRSE(nn.Module):
    """ArcFace IR-SE recognition net (112x112 faces -> unit-length 512-d embedding).

    Same layout as the `model_ir_se50.pth` shipped with pSp/e4e/ReStyle for their identity loss.
    """

    def __init__(self, num_layers: int = 50, input_size: int = 112, squeeze_excite: bool = True):
        super().__init__()
        if input_size not in (112, 224):
            raise ValueError(f"ArcFace input size must be 112 or 224, got {input_size}")
        self.input_size = input_size
        self.input_layer = ir_input_layer(3)
        self.body = ir_body(num_layers, squeeze_excite)
        spatial = input_size // 16
        # Index 1 (dropout) and 2 (flatten) hold no weights but keep the checkpoint's numbering.
        self.output_layer = nn.Sequential(nn.BatchNorm2d(512), nn.Dropout(0.6), nn.Flatten(),
                                          nn.Linear(512 * spatial * spatial, 512), nn.BatchNorm1d(512, affine=False))

    def forward(self, x):
        x = self.output_layer(self.body(self.input_layer(x)))
        return F.normalize(x, dim=1)


RESNET34_UNITS = (3, 4, 6, 3)


def resnet34_channels(width: float = 1.0) -> tuple[int, int, int, int]:
    return tuple(scaled(c, width) for c in (64, 128, 256, 512))


def resnet34_body(width: float = 1.0) -> nn.Sequential:
    """torchvision ResNet-34's four stages flattened into one Sequential (torchvision's block names, so
    its ImageNet weights and the released checkpoints load)."""
    from torchvision.models.resnet import BasicBlock

    blocks = []
    c_in = scaled(64, width)
    for stage, (units, channels) in enumerate(zip(RESNET34_UNITS, resnet34_channels(width))):
        for unit in range(units):
            stride = 2 if stage > 0 and unit == 0 else 1
            downsample = None
            if stride != 1 or c_in != channels:
                downsample = nn.Sequential(nn.Conv2d(c_in, channels, 1, stride, bias=False), nn.BatchNorm2d(channels))
            blocks.append(BasicBlock(c_in, channels, stride, downsample))
            c_in = channels
    return nn.Sequential(*blocks)
