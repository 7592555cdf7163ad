"""SeFa (Shen & Zhou, "Closed-Form Factorization of Latent Semantics in GANs"): directions from weights.

Every style affine maps w to styles with a matrix A_l. Directions n that change the styles the
most maximise |A n|^2 = n^T A^T A n over unit n, so they are the top eigenvectors of A^T A with
A the chosen layers' weights stacked row-wise. As in the paper, each output channel's weight
row is scaled to unit norm first so that wide layers and large weights do not dominate.
No classifier and no samples are needed: it works for any domain.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import SgtoolError
from .stylespace import style_layers


def sefa_layers(generator, layers: Sequence[int] | None = None):
    """The S layers SeFa factorises: convolution styles only, fed by the style inputs in `layers`.

    Left out: StyleGAN3's input affine (its 4 outputs are a rotation and translation, not channel
    scales) and toRGB styles (colour only), as SeFa does for StyleGAN2.
    """
    chosen = [layer for layer in style_layers(generator) if not layer.is_geometry and not layer.is_torgb
              and (layers is None or layer.w_index in set(layers))]
    if not chosen:
        raise SgtoolError(f"--layers {list(layers or [])} selects no convolution style layer of this generator "
                          f"(style inputs 0-{generator.num_ws - 1})")
    return chosen


def sefa_directions(generator, layers: Sequence[int] | None = None, top: int = 10,
                    normalize: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(directions [top, w_dim] unit rows, eigenvalues [top] descending, layer names used)."""
    chosen = sefa_layers(generator, layers)
    weight = torch.cat([layer.module.weight.detach().to("cpu", torch.float64) for layer in chosen], dim=0)
    if normalize:
        weight = weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
    gram = weight.T @ weight
    eigenvalues, eigenvectors = torch.linalg.eigh(gram)  # ascending, orthonormal columns
    order = torch.argsort(eigenvalues, descending=True)[:max(1, min(top, gram.shape[0]))]
    directions = eigenvectors[:, order].T.clone()
    # Eigenvectors have no sign: fix one (largest component positive) so runs are reproducible.
    pivot = directions.abs().argmax(dim=1)
    signs = torch.sign(directions[torch.arange(len(order)), pivot])
    directions *= signs[:, None]
    return (directions.numpy().astype(np.float32), eigenvalues[order].numpy(),
            [layer.name for layer in chosen])
