"""Optimisation-based projection and hybrid inversion on the golden StyleGAN3 test generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from support.golden import golden_dir
from sgtool.settings import InvertSettings
from sgtool.losses import load_lpips
from sgtool.metrics import psnr
from sgtool.models import load_generator
from sgtool.pipelines.invert import invert_target, render
from sgtool.pipelines.invert.project import project, w_statistics


@pytest.fixture(scope="module")
def generator():
    return load_generator(golden_dir("generators") / "sg3t_64.pkl")


@pytest.fixture(scope="module")
def lpips_model():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return load_lpips("vgg", random_backbone=True)


def target_from_seed(G, seed):
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).to(torch.float32)
    with torch.no_grad():
        ws = G.mapping(z, None)
    return ws[0], render(G, ws)[0]


def test_projection_reaches_30db_in_w_plus_within_the_default_steps(generator, lpips_model):
    defaults = InvertSettings()
    num_steps, l2_weight = defaults.project_steps, defaults.l2_weight
    _, target = target_from_seed(generator, 7)
    start_psnr = float(psnr(render(generator, w_statistics(generator)[0].expand(1, 16, -1)), target[None]))
    reached = []

    def check(step):
        # Score the noise-free latent every 10 steps; stop once it is good enough (saves test time).
        if step.step % 10 == 0:
            value = float(psnr(render(generator, step.latents[None]), target[None]))
            reached.append((step.step, value))
            return value >= 30

    result = project(generator, target, num_steps=num_steps, space="w+", l2_weight=l2_weight,
                     lpips_model=lpips_model, seed=1, callback=check, **defaults.projector.options())
    assert reached and reached[-1][1] >= 30, f"PSNR only reached {reached[-1:]} (start {start_psnr:.1f} dB)"
    assert reached[-1][0] <= num_steps
    losses = np.array(result.losses)
    assert losses[-5:].mean() < 0.5 * losses[:5].mean(), "loss curve does not decrease"
    final = float(psnr(render(generator, result.latents[None]), target[None]))
    assert final >= 30 and final > start_psnr + 10



class EstimateEncoder:
    """Stands in for a trained encoder on the test generator: it returns a fixed, imperfect W+ estimate
    (the true code plus a deterministic error), through the same `.invert()` interface hybrid uses."""

    def __init__(self, generator, estimate):
        self.generator = generator
        self.estimate = estimate

    def invert(self, x, steps=None, transform=None):
        from sgtool.models.encoders import InversionStep, face_pool

        latents = self.estimate[None].expand(x.shape[0], -1, -1)
        return [InversionStep(latents=latents, images=face_pool(render(self.generator, latents)))]


def test_hybrid_beats_encoder_only_and_optimize_only_at_equal_steps(generator, lpips_model):
    w_true, target = target_from_seed(generator, 11)
    w_avg, w_std = w_statistics(generator)
    error = torch.from_numpy(np.random.RandomState(0).randn(*w_true.shape)).to(torch.float32)
    estimate = w_true + 0.07 * (w_std / np.sqrt(generator.w_dim)) * error
    encoder = EstimateEncoder(generator, estimate)
    num_steps = 12

    def score(latents):
        return float(psnr(render(generator, latents[None]), target[None]))

    encoder_only = invert_target(target, "encoder", encoder=encoder)
    optimize_only = invert_target(target, "optimize", generator=generator, num_steps=num_steps,
                                  lpips_model=lpips_model, seed=0)
    hybrid = invert_target(target, "hybrid", encoder=encoder, num_steps=num_steps, lpips_model=lpips_model, seed=0)
    assert torch.equal(hybrid.step_latents[0], estimate)  # hybrid starts from the encoder's code
    assert len(hybrid.losses) == len(optimize_only.losses) == num_steps
    scores = {name: score(r.latents) for name, r in
              (("encoder", encoder_only), ("optimize", optimize_only), ("hybrid", hybrid))}
    assert scores["hybrid"] > scores["encoder"] and scores["hybrid"] > scores["optimize"], scores
    assert hybrid.losses[-1] < optimize_only.losses[-1]


def test_stylegan2_noise_maps_are_optimised_on_a_copy(lpips_model):
    G = load_generator(golden_dir("generators") / "sg2_64.pkl")
    before = {k: v.clone() for k, v in G.synthesis.named_buffers() if k.endswith("noise_const")}
    assert before
    _, target = target_from_seed(G, 2)
    seen = []
    result = project(G, target, num_steps=3, space="w", lpips_model=lpips_model, seed=0, w_avg_samples=500,
                     callback=lambda step: seen.append(step.step))
    assert seen == [1, 2, 3] and all(np.isfinite(result.losses))
    # The penalty term is part of the loss: total > distance once noise maps are optimised.
    assert all(total > dist for total, dist in zip(result.losses, result.distances))
    for name, value in G.synthesis.named_buffers():
        if name in before:
            assert torch.equal(value, before[name]), "the caller's generator was modified"


def test_a_diverging_projection_keeps_the_last_good_latent(generator, lpips_model):
    class TurnsNaN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, a, b):
            self.calls += 1
            value = lpips_model(a, b)
            return value * float("nan") if self.calls > 4 else value

    seen = []
    _, target = target_from_seed(generator, 3)
    result = project(generator, target, num_steps=20, lpips_model=TurnsNaN(), w_avg_samples=64,
                     callback=lambda step: seen.append(step.latents.clone()))
    assert result.diverged_at == 5 and result.stopped_early and len(result.losses) == 4
    assert torch.isfinite(result.latents).all() and torch.equal(result.latents, seen[-1])
