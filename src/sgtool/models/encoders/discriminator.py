"""e4e's latent-code discriminator: an MLP telling encoder codes from the mapping network's w."""

from __future__ import annotations

from torch import nn


class LatentCodesDiscriminator(nn.Module):
    def __init__(self, style_dim: int = 512, n_mlp: int = 4):
        super().__init__()
        layers = []
        for _ in range(n_mlp - 1):
            layers += [nn.Linear(style_dim, style_dim), nn.LeakyReLU(0.2)]
        layers.append(nn.Linear(style_dim, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, w):
        return self.mlp(w)
