"""Seeds -> images, with NVIDIA's gen_images conventions (seeded z, truncation, input transform)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import SgtoolError
from ..geometry import input_transform
from ..utils.io import save_image, save_npy, to_uint8


def seed_to_z(seed: int, z_dim: int) -> torch.Tensor:
    """The latent NVIDIA's gen_images.py draws for a seed, so seeds render the same images."""
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).to(torch.float32)


def class_label(generator, class_idx: int | None, device) -> torch.Tensor | None:
    if generator.c_dim == 0:
        if class_idx is not None:
            raise SgtoolError("--class was given but this network is unconditional; drop --class")
        return None
    if class_idx is None:
        raise SgtoolError(f"this network is conditional ({generator.c_dim} classes): pass --class N")
    if not 0 <= class_idx < generator.c_dim:
        raise SgtoolError(f"--class must be between 0 and {generator.c_dim - 1}, got {class_idx}")
    c = torch.zeros([1, generator.c_dim], device=device)
    c[:, class_idx] = 1
    return c


@dataclass
class Rendered:
    seed: int
    image: np.ndarray  # uint8 HWC
    ws: np.ndarray  # [num_ws, w_dim]


def transform_for(generator, rotate: float = 0.0, translate=(0.0, 0.0)) -> torch.Tensor | None:
    """Input transform for a rotated/translated StyleGAN3 render; None when there is nothing to do."""
    if rotate == 0 and tuple(translate) == (0.0, 0.0):
        return None
    if generator.kind != "stylegan3":
        raise SgtoolError("--rotate/--translate need a StyleGAN3 network (StyleGAN2 has no input transform)")
    return torch.from_numpy(input_transform(translate, rotate)).to(torch.float32)


@torch.no_grad()
def render_seeds(generator, seeds: Sequence[int], truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                 class_idx: int | None = None, noise_mode: str = "const", rotate: float = 0.0,
                 translate=(0.0, 0.0), on_image: Callable[[Rendered], None] | None = None) -> list[Rendered]:
    """Render one image per seed: synthesis(mapping(z_seed)). `on_image` is called after each."""
    device = next(generator.parameters()).device
    c = class_label(generator, class_idx, device)
    transform = transform_for(generator, rotate, translate)
    extra = {} if transform is None else {"transform": transform.to(device)}
    results = []
    for seed in seeds:
        z = seed_to_z(seed, generator.z_dim).to(device)
        ws = generator.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        image = generator.synthesis(ws, noise_mode=noise_mode, **extra)
        item = Rendered(seed=seed, image=to_uint8(image)[0], ws=ws[0].cpu().numpy())
        results.append(item)
        if on_image is not None:
            on_image(item)
    return results


def write_rendered(item: Rendered, outdir: Path, save_latents: bool) -> dict:
    image_path = save_image(item.image, outdir / f"seed{item.seed:04d}.png")
    record = {"seed": item.seed, "image": str(image_path)}
    if save_latents:
        record["latents"] = str(save_npy(item.ws.astype(np.float32), outdir / f"seed{item.seed:04d}.npy"))
    return record
