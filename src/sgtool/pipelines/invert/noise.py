"""W+N, Image2StyleGAN++'s second stage: a StyleGAN2 projection's noise maps fitted with the latent held, and
rendering and saving with them."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from ...errors import SgtoolError
from .masks import masked_mse

NOISE_FORMAT = "sgtool-noise-maps"


def fit_noise(G, latents, target, weights, steps: int, learning_rate: float, offset: int, losses: list,
              distances: list, callback, step_report) -> dict[str, torch.Tensor]:
    """W+N's second stage: the noise maps (from the first stage) fitted by masked MSE, the latent held.
    Image2StyleGAN++ leaves them unregularised here: they take up the detail the latent cannot reach."""
    named = [(name, buf) for name, buf in G.synthesis.named_buffers() if name.endswith("noise_const")]
    maps = [buf for _, buf in named]
    optimizer = torch.optim.Adam(maps, betas=(0.9, 0.999), lr=learning_rate)
    ws = latents[None]
    total = offset + steps
    for step in range(steps):
        synth = G.synthesis(ws, noise_mode="const").float()
        loss = masked_mse(synth, target, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if not (torch.isfinite(loss) and all(torch.isfinite(m.grad).all() for m in maps)):
            break
        optimizer.step()
        losses.append(float(loss.detach()))
        distances.append(losses[-1])
        if callback is not None and callback(step_report(offset + step + 1, total, losses[-1], latents,
                                                            synth.detach())):
            break
    return {name: buf.detach().clone() for name, buf in named}


def with_noise(G, noise: dict[str, torch.Tensor] | None):
    """`G` rendering with the fitted noise maps of a W+N projection in its constant noise (a copy; `G` itself when
    there are none)."""
    if not noise:
        return G
    G = copy.deepcopy(G)
    buffers = dict(G.synthesis.named_buffers())
    for name, value in noise.items():
        if name not in buffers or buffers[name].shape != value.shape:
            raise SgtoolError(f"noise map {name} {list(value.shape)} does not belong to this generator")
        buffers[name].copy_(value.to(buffers[name]))
    return G



def save_noise(noise: dict[str, torch.Tensor], path: Path, source) -> Path:
    """NAME_noise.safetensors: the fitted noise maps by the generator's buffer names."""
    from safetensors.torch import save_file

    from ...utils.io import atomic_path

    with atomic_path(path) as tmp:
        save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in noise.items()}, str(tmp),
                  metadata={"format": NOISE_FORMAT, "source": str(source)})
    return Path(path)
