"""Autograd wrappers around the compiled kernels, with the reference ops' exact signatures.

Each function takes the extension `module` (CPU or CUDA build) first. Filters are turned into
correlation taps here, scaled and cast exactly as ref.py does, so both paths use identical taps.
Gradients: upfirdn2d's backward is upfirdn2d with the reversed filter and up/down swapped (so it is
itself differentiable); filtered_lrelu saves a two-bit code per upsampled sample (which side of
the leaky ReLU, or clamped; packed four to a byte by the CPU build) and runs the transposed stages;
bias_act recomputes from its input.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from .ref import ACTIVATIONS, filter_size, parse_padding, parse_scaling, resolve_activation

ACT_INDEX = {name: i for i, name in enumerate(ACTIVATIONS)}  # matches enum Act in csrc/sgtool_ops.h
SUPPORTED_DTYPES = (torch.float32, torch.float64)
# The CPU build's filtered_lrelu also reads and writes bfloat16 (computing in float32), for bf16 autocast.
FILTERED_LRELU_CPU_DTYPES = (*SUPPORTED_DTYPES, torch.bfloat16)


def correlation_taps(f, gain, flip_filter, dtype, device):
    """ref.upfirdn2d's filter preparation: scale by gain (per axis for 1-D), cast, flip unless flip_filter.
    bfloat16 data keeps float32 taps: the kernels compute in float32."""
    dtype = torch.float32 if dtype == torch.bfloat16 else dtype
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=device)
    taps = (f * (gain ** (f.ndim / 2))).to(dtype)
    if not flip_filter:
        taps = taps.flip(list(range(taps.ndim)))
    return taps.contiguous()


def _reversed(taps):
    return taps.flip(list(range(taps.ndim))).contiguous()


def supports(x, *others, dtypes=SUPPORTED_DTYPES) -> bool:
    """Whether the kernels handle these tensors (else the caller uses the reference)."""
    if x.dtype not in dtypes:
        return False
    return all(t is None or (t.device == x.device and not t.requires_grad) for t in others)


class _Upfirdn2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, taps, module, up, down, padding):
        upx, upy = up
        downx, downy = down
        px0, px1, py0, py1 = padding
        y = module.upfirdn2d(x, taps, upx, upy, downx, downy, px0, px1, py0, py1)
        ctx.module, ctx.taps, ctx.up, ctx.down, ctx.padding = module, taps, up, down, padding
        ctx.in_size = x.shape[2:]
        return y

    @staticmethod
    def backward(ctx, dy):
        (upx, upy), (downx, downy), (px0, _, py0, _) = ctx.up, ctx.down, ctx.padding
        in_h, in_w = ctx.in_size
        out_h, out_w = dy.shape[2:]
        fw, fh = filter_size(ctx.taps)
        padding = (fw - px0 - 1, in_w * upx - out_w * downx + px0 - upx + 1,
                   fh - py0 - 1, in_h * upy - out_h * downy + py0 - upy + 1)
        dx = _Upfirdn2d.apply(dy.contiguous(), _reversed(ctx.taps), ctx.module, ctx.down, ctx.up, padding)
        return dx, None, None, None, None, None


def upfirdn2d(module, x, f=None, up=1, down=1, padding=0, flip_filter=False, gain=1):
    taps = correlation_taps(f, gain, flip_filter, x.dtype, x.device)
    return _Upfirdn2d.apply(x, taps, module, parse_scaling(up), parse_scaling(down), parse_padding(padding))


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, module, dim, inner, act, alpha, gain, clamp):
        bias = b if b is not None else x.new_empty([0])
        ctx.save_for_backward(x, bias)
        ctx.module, ctx.params, ctx.has_bias, ctx.dim = module, (inner, act, alpha, gain, clamp), b is not None, dim
        return module.bias_act_forward(x, bias, inner, act, alpha, gain, clamp)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, bias = ctx.saved_tensors
        dx = ctx.module.bias_act_backward(dy, x, bias, *ctx.params)
        db = None
        if ctx.has_bias and ctx.needs_input_grad[1]:
            dims = [d for d in range(x.ndim) if d != ctx.dim]
            db = dx.sum(dims).to(bias.dtype)
        return dx, db, None, None, None, None, None, None, None


def bias_act(module, x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    _, alpha, gain, clamp = resolve_activation(act, alpha, gain, clamp)
    dim = dim % x.ndim
    inner = math.prod(x.shape[dim + 1:])
    return _BiasAct.apply(x.contiguous(), b, module, dim, inner, ACT_INDEX[act], alpha, gain, clamp)


class _FilteredLrelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, fu_taps, fd_taps, module, up, down, padding, gain, slope, clamp, save_codes):
        bias = b if b is not None else x.new_empty([0])
        y, codes = module.filtered_lrelu_forward(x, fu_taps, fd_taps, bias, up, down, *padding, gain, slope, clamp,
                                                 save_codes)
        if save_codes:
            ctx.save_for_backward(codes)
        ctx.module, ctx.taps = module, (fu_taps, fd_taps)
        ctx.params = (up, down, *padding)
        ctx.act = (gain, slope)
        ctx.in_size = x.shape[2:]
        ctx.bias_dtype = bias.dtype
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        (codes,) = ctx.saved_tensors
        fu_taps, fd_taps = ctx.taps
        dx = ctx.module.filtered_lrelu_backward(dy, codes, _reversed(fu_taps), _reversed(fd_taps), *ctx.params,
                                                *ctx.in_size, *ctx.act)
        db = dx.sum([0, 2, 3]).to(ctx.bias_dtype) if ctx.needs_input_grad[1] else None
        return dx, db, None, None, None, None, None, None, None, None, None, None


def filtered_lrelu(module, x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=math.sqrt(2), slope=0.2,
                   clamp=None, flip_filter=False):
    fu_taps = correlation_taps(fu, up ** 2, flip_filter, x.dtype, x.device)
    fd_taps = correlation_taps(fd, 1, flip_filter, x.dtype, x.device)
    save_codes = torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad))
    return _FilteredLrelu.apply(x.contiguous(), b, fu_taps, fd_taps, module, int(up), int(down),
                                parse_padding(padding), float(gain), float(slope),
                                float(-1 if clamp is None else clamp), save_codes)
