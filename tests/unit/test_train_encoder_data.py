"""train-encoder's synthetic data: renders of known latents, in the image range like any image file."""

from __future__ import annotations

import torch

from support.golden import golden_dir
from sgtool.models import load_generator
from sgtool.pipelines.shared.render import synthesize
from sgtool.pipelines.train_encoder.data import render_targets
from sgtool.pipelines.train_encoder.run import SYNTHETIC_TEST_OFFSET


def test_synthetic_targets_are_renders_of_their_latents_clamped_to_the_image_range():
    generator = load_generator(golden_dir("generators", "sg2_64.pkl")).eval()
    indices = torch.arange(4)
    images, ws = render_targets(generator, indices, seed=0, truncation=1.0, size=64, device="cpu")
    raw = synthesize(generator, ws)
    assert raw.abs().max() > 1.5  # this random-weight generator renders far outside [-1, 1]
    torch.testing.assert_close(images, raw.clamp(-1, 1), atol=0, rtol=0)
    again, ws_again = render_targets(generator, indices, seed=0, truncation=1.0, size=64, device="cpu")
    assert torch.equal(again, images) and torch.equal(ws_again, ws)  # the index and seed fix the latent
    pooled, _ = render_targets(generator, indices, seed=0, truncation=1.0, size=32, device="cpu")
    torch.testing.assert_close(pooled, torch.nn.functional.avg_pool2d(images, 2))


def test_held_out_synthetic_latents_are_not_training_latents():
    # torch's CPU generator reads a seed's low 32 bits: seeding by index made the held-out indices
    # (offset by 2**40) render the first training images, so "held-out" losses measured memorisation.
    generator = load_generator(golden_dir("generators", "sg2_64.pkl")).eval()
    _, train_ws = render_targets(generator, torch.arange(4), seed=0, truncation=1.0, size=64, device="cpu")
    _, test_ws = render_targets(generator, torch.arange(4) + SYNTHETIC_TEST_OFFSET, seed=0, truncation=1.0, size=64,
                                device="cpu")
    _, other_seed_ws = render_targets(generator, torch.arange(4), seed=1, truncation=1.0, size=64, device="cpu")
    distinct = torch.cat([train_ws, test_ws, other_seed_ws])[:, 0]
    assert torch.cdist(distinct, distinct).add(torch.eye(12) * 1e9).min() > 1e-3
