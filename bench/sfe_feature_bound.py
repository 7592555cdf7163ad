"""How far a feature-space encoder could go: for held-out synthetic images of a generator, a W+ encoder's codes
and, at every replaceable layer, the feature F found by optimising it for each image (Adam on F alone, the codes
fixed). No encoder predicts a better F than this, so `error with F` bounds what `train-encoder --arch sfe` can
reach at that layer with codes of the W+ encoder's quality (issue 34's 3x target is checked against it).

    python bench/sfe_feature_bound.py --network G.pkl --e4e runs/e4e/best.pt [--steps 150] [--images 8]

Prints a markdown table: the layer, its shape, the held-out error (MSE, clamped images) with the optimised F,
and the W+ encoder's error divided by it.
"""

from __future__ import annotations

import argparse

import torch

from sgtool.errors import SgtoolError
from sgtool.models import load_generator
from sgtool.models.encoders.sfe_layers import choose_feature_layer, feature_layers, generator_feature, \
    render_with_feature
from sgtool.models.encoders.inverter import encoder_size, fit_input
from sgtool.pipelines.invert import load_encoder
from sgtool.pipelines.shared.render import synthesize
from sgtool.pipelines.train_encoder.data import render_targets
from sgtool.pipelines.train_encoder.run import SYNTHETIC_TEST_OFFSET


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", required=True)
    parser.add_argument("--e4e", required=True, help="a W+ encoder trained for the network (train-encoder's best.pt)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    try:
        generator = load_generator(args.network).eval().requires_grad_(False)
        encoder = load_encoder(args.e4e, network=generator)
    except SgtoolError as exc:
        parser.error(str(exc))  # one line, exit 2
    # The held-out images train-encoder validates on (seed 0).
    x, _ = render_targets(generator, torch.arange(args.images) + SYNTHETIC_TEST_OFFSET, 0, 1.0,
                          int(generator.img_resolution), "cpu")
    with torch.no_grad():
        codes = encoder.encoder(fit_input(x, encoder_size(encoder.encoder))) + encoder.latent_avg
        baseline = float((synthesize(generator, codes).clamp(-1, 1) - x).pow(2).mean())
    default = choose_feature_layer(generator).name
    print(f"W+ encoder alone: {baseline:.4f}\n")
    print("| layer | channels x side | error with the optimised F | W+ error / it |")
    print("|---|---|---|---|")
    for layer in feature_layers(generator)[:-1]:  # the last layer's F is the picture itself
        with torch.no_grad():
            start = generator_feature(generator, codes, layer)
        feature = start.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([feature], lr=0.05)
        for _ in range(args.steps):
            loss = (render_with_feature(generator, codes, feature, layer) - x).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            error = float((render_with_feature(generator, codes, feature, layer).clamp(-1, 1) - x).pow(2).mean())
        mark = " (default)" if layer.name == default else ""
        print(f"| {layer.name}{mark} | {layer.channels} x {layer.size} | {error:.4f} | {baseline / error:.1f}x |",
              flush=True)


if __name__ == "__main__":
    main()
