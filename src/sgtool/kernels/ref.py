"""Pure-PyTorch reference implementations of the generator's resampling and activation ops.

These define the numbers: every faster backend is tested against them. They follow the
semantics of NVIDIA's StyleGAN2-ADA/StyleGAN3 ops (same arguments, same padding and filter
conventions) so official checkpoints render identically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Activation:
    func: Callable[[torch.Tensor, float], torch.Tensor]
    def_alpha: float
    def_gain: float


ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(lambda x, a: x, 0.0, 1.0),
    "relu": Activation(lambda x, a: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": Activation(lambda x, a: F.leaky_relu(x, a), 0.2, math.sqrt(2)),
    "tanh": Activation(lambda x, a: torch.tanh(x), 0.0, 1.0),
    "sigmoid": Activation(lambda x, a: torch.sigmoid(x), 0.0, 1.0),
    "elu": Activation(lambda x, a: F.elu(x), 0.0, 1.0),
    "selu": Activation(lambda x, a: F.selu(x), 0.0, 1.0),
    "softplus": Activation(lambda x, a: F.softplus(x), 0.0, 1.0),
    "swish": Activation(lambda x, a: torch.sigmoid(x) * x, 0.0, math.sqrt(2)),
}


def resolve_activation(act: str, alpha: float | None, gain: float | None, clamp: float | None):
    """Fill in an activation's defaults: returns (spec, alpha, gain, clamp), clamp < 0 meaning none."""
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; known: {', '.join(ACTIVATIONS)}")
    spec = ACTIVATIONS[act]
    alpha = float(spec.def_alpha if alpha is None else alpha)
    gain = float(spec.def_gain if gain is None else gain)
    clamp = float(-1 if clamp is None else clamp)
    return spec, alpha, gain, clamp


def bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    """Add a per-channel bias, apply an activation, scale by gain and clamp to [-clamp, clamp]."""
    spec, alpha, gain, clamp = resolve_activation(act, alpha, gain, clamp)
    if b is not None:
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"bias of shape {tuple(b.shape)} does not fit dim {dim} of {tuple(x.shape)}")
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def parse_scaling(scaling) -> tuple[int, int]:
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    sx, sy = (int(v) for v in scaling)
    if sx < 1 or sy < 1:
        raise ValueError(f"resampling factors must be >= 1, got {scaling}")
    return sx, sy


def parse_padding(padding) -> tuple[int, int, int, int]:
    """Padding as [x0, x1, y0, y1]; an int or [x, y] pads both sides equally."""
    if isinstance(padding, int):
        padding = [padding, padding]
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        padding = [px, px, py, py]
    if len(padding) != 4:
        raise ValueError(f"padding must have 1, 2 or 4 values, got {padding}")
    return tuple(padding)


def filter_size(f) -> tuple[int, int]:
    """(width, height) of a 1-D separable or 2-D filter; None is the 1x1 identity."""
    if f is None:
        return 1, 1
    if f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1-D or 2-D, got shape {tuple(f.shape)}")
    return f.shape[-1], f.shape[0]


def setup_filter(f, normalize=True, flip_filter=False, gain=1, separable=None, device=None):
    """Turn a list of taps into a filter tensor as StyleGAN2 stores it.

    Short 1-D filters become their 2-D outer product; long ones stay separable.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32, device=device)
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    return f * (gain ** (f.ndim / 2))


def upfirdn2d(x, f=None, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """Upsample by zero insertion, pad (or crop, for negative padding), FIR filter, downsample.

    `f` is a 1-D separable or 2-D filter applied as a true convolution unless flip_filter.
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects NCHW input, got shape {tuple(x.shape)}")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    batch, channels, in_h, in_w = x.shape
    upx, upy = parse_scaling(up)
    downx, downy = parse_scaling(down)
    px0, px1, py0, py1 = parse_padding(padding)

    x = x.reshape(batch, channels, in_h, 1, in_w, 1)
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape(batch, channels, in_h * upy, in_w * upx)

    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]

    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        # conv2d correlates; flipping the taps makes it a convolution.
        f = f.flip(list(range(f.ndim)))
    f = f[None, None].repeat([channels, 1] + [1] * f.ndim)
    if f.ndim == 4:
        x = F.conv2d(x, f, groups=channels)
    else:
        x = F.conv2d(x, f.unsqueeze(2), groups=channels)
        x = F.conv2d(x, f.unsqueeze(3), groups=channels)
    return x[:, :, ::downy, ::downx]


def filtered_lrelu(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=math.sqrt(2), slope=0.2,
                   clamp=None, flip_filter=False):
    """StyleGAN3's alias-free nonlinearity: bias, upsample, leaky ReLU, clamp, downsample."""
    fu_w, fu_h = filter_size(fu)
    fd_w, fd_h = filter_size(fd)
    px0, px1, py0, py1 = parse_padding(padding)
    batch, channels, in_h, in_w = x.shape
    out_w = (in_w * up + (px0 + px1) - (fu_w - 1) - (fd_w - 1) + (down - 1)) // down
    out_h = (in_h * up + (py0 + py1) - (fu_h - 1) - (fd_h - 1) + (down - 1)) // down
    if out_w < 1 or out_h < 1:
        raise ValueError(f"filtered_lrelu output would be empty for input {tuple(x.shape)} and padding {padding}")
    x = bias_act(x, b)
    x = upfirdn2d(x, fu, up=up, padding=[px0, px1, py0, py1], gain=up ** 2, flip_filter=flip_filter)
    x = bias_act(x, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    x = upfirdn2d(x, fd, down=down, flip_filter=flip_filter)
    return x
