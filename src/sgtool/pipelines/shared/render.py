"""Rendering codes (W+ latents or S), aligned or through a landmarks transform: the one render function."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ...editing.stylespace import synthesize_s
from ...errors import SgtoolError


def device_of(generator) -> torch.device:
    return next(generator.parameters()).device


def as_transform(generator, transform) -> torch.Tensor | None:
    """A [3, 3] / [N, 3, 3] float tensor on the generator's device; refused for StyleGAN2."""
    if transform is None:
        return None
    if generator.kind != "stylegan3":
        raise SgtoolError("a landmarks transform needs a StyleGAN3 network (StyleGAN2 has no input transform); "
                          "render StyleGAN2 codes without one (the aligned view)")
    transform = torch.as_tensor(np.asarray(transform, dtype=np.float32) if not isinstance(transform, torch.Tensor)
                                else transform, dtype=torch.float32)
    if transform.shape[-2:] != (3, 3):
        raise SgtoolError(f"a landmarks transform must be 3x3, got shape {list(transform.shape)}")
    return transform.to(device_of(generator))


def synthesize(generator, code, transform=None, noise_mode: str = "const") -> torch.Tensor:
    """A code -> images [N, C, R, R], with gradients when they are enabled. The code is W+ ([N, num_ws, w_dim])
    or, for edits W+ cannot express (StyleSpace channels, text edits), S (a dict like `stylespace.w_to_s`'s).

    StyleGAN3 renders through `transform` (inv(T) of a landmarks transform, [3, 3] or [N, 3, 3]) or
    the identity, never through whatever the network's input buffer last held.
    """
    batch = code_batch(code)
    transform = as_transform(generator, transform)
    if generator.kind == "stylegan3" and transform is None:
        transform = torch.eye(3, device=device_of(generator))
    if transform is not None and transform.ndim == 2:
        transform = transform.expand(batch, 3, 3)
    if isinstance(code, Mapping):
        return synthesize_s(generator, code, transform, noise_mode)
    code = code.to(device_of(generator))
    extra = {} if transform is None else {"transform": transform}
    return generator.synthesis(code, noise_mode=noise_mode, **extra)


@torch.no_grad()
def render(generator, code, transform=None, noise_mode: str = "const") -> torch.Tensor:
    """W+ codes ([num_ws, w_dim] or [N, num_ws, w_dim], tensor or array) or S -> images [N, C, R, R] in about
    [-1, 1]."""
    if not isinstance(code, Mapping):
        code = torch.as_tensor(np.asarray(code) if not isinstance(code, torch.Tensor) else code,
                               dtype=torch.float32).to(device_of(generator))
        if code.ndim == 2:
            code = code.unsqueeze(0)
    return synthesize(generator, code, transform, noise_mode)


def code_batch(code) -> int:
    return int(next(iter(code.values())).shape[0]) if isinstance(code, Mapping) else int(code.shape[0])


def code_item(code, index: int):
    """Item `index` of a batch of codes, kept as a batch of one."""
    if isinstance(code, Mapping):
        return {name: values[index:index + 1] for name, values in code.items()}
    return code[index:index + 1]


def cat_codes(codes: Sequence):
    """One batch of several batches of codes (all W+ or all S)."""
    if isinstance(codes[0], Mapping):
        return {name: torch.cat([code[name] for code in codes]) for name in codes[0]}
    return torch.cat(list(codes))


def check_layers(generator, layers: Sequence[int] | None) -> None:
    """Style-input indices (`--layers`) must exist in this generator."""
    bad = [i for i in layers or () if not 0 <= i < generator.num_ws]
    if bad:
        raise SgtoolError(f"--layers {bad[0]} is out of range: this generator has style inputs "
                          f"0-{generator.num_ws - 1}")
