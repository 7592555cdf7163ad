"""Rendering W+ latents, aligned or through a landmarks transform: the one render function."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import SgtoolError


def device_of(generator) -> torch.device:
    return next(generator.parameters()).device


def as_transform(generator, transform) -> torch.Tensor | None:
    """A [3, 3] / [N, 3, 3] float tensor on the generator's device; refused for StyleGAN2."""
    if transform is None:
        return None
    if generator.kind != "stylegan3":
        raise SgtoolError("a landmarks transform needs a StyleGAN3 network (StyleGAN2 has no input transform); "
                          "drop --transforms or pass --aligned")
    transform = torch.as_tensor(np.asarray(transform, dtype=np.float32) if not isinstance(transform, torch.Tensor)
                                else transform, dtype=torch.float32)
    if transform.shape[-2:] != (3, 3):
        raise SgtoolError(f"a landmarks transform must be 3x3, got shape {list(transform.shape)}")
    return transform.to(device_of(generator))


def synthesize(generator, ws: torch.Tensor, transform=None, noise_mode: str = "const") -> torch.Tensor:
    """W+ [N, num_ws, w_dim] -> images [N, C, R, R], with gradients when they are enabled.

    StyleGAN3 renders through `transform` (inv(T) of a landmarks transform, [3, 3] or [N, 3, 3]) or
    the identity, never through whatever the network's input buffer last held.
    """
    transform = as_transform(generator, transform)
    if generator.kind == "stylegan3" and transform is None:
        transform = torch.eye(3, device=ws.device)
    if transform is not None and transform.ndim == 2:
        transform = transform.expand(ws.shape[0], 3, 3)
    extra = {} if transform is None else {"transform": transform}
    return generator.synthesis(ws, noise_mode=noise_mode, **extra)


@torch.no_grad()
def render(generator, ws, transform=None, noise_mode: str = "const") -> torch.Tensor:
    """W+ codes ([num_ws, w_dim] or [N, num_ws, w_dim], tensor or array) -> images [N, C, R, R] in about [-1, 1]."""
    ws = torch.as_tensor(np.asarray(ws) if not isinstance(ws, torch.Tensor) else ws, dtype=torch.float32)
    ws = ws.to(device_of(generator))
    if ws.ndim == 2:
        ws = ws.unsqueeze(0)
    return synthesize(generator, ws, transform, noise_mode)
