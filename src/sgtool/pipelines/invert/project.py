"""Optimisation-based projection into W or W+ (NVIDIA's projector, with LPIPS + MSE).

Follows stylegan2-ada-pytorch's projector: Adam on the latent with a cosine learning-rate
ramp-down and a short linear ramp-up, Gaussian noise on the latent that fades out over the first
`noise_ramp_length` of the run, and (StyleGAN2 only) optimised per-layer noise maps held near
white noise by a multi-scale autocorrelation penalty and renormalised after every step.
The perceptual distance is LPIPS-VGG from the `lpips` package; `l2_weight` adds pixel MSE.

Masked inversion (Image2StyleGAN++): with a `mask`, both losses only see where it is white, so the generator
fills the rest; `noise_steps` adds its second stage (W+N), the StyleGAN2 noise maps fitted by MSE under the
mask with the latent held.

Starting points: w_avg (estimated from 10 000 mapped z as NVIDIA does) or a given W+ latent
(the encoder's, for hybrid inversion). The caller's generator is never modified.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from ...device import autocast, resolve_precision
from ...errors import SgtoolError
from .masks import mask_weights, masked_mse
from .noise import fit_noise

LPIPS_SIZE = 256


@dataclass
class ProjectionResult:
    latents: torch.Tensor  # final W+ code [num_ws, w_dim] (W space: the one w repeated)
    losses: list[float]  # total loss at every step
    distances: list[float]  # LPIPS + l2_weight * MSE at every step (without the noise penalty)
    seconds: float
    stopped_early: bool = False
    diverged_at: int | None = None  # the step whose loss or gradient was not finite (the latent before it is kept)
    noise: dict[str, torch.Tensor] | None = None  # W+N: the fitted noise maps by buffer name (render with them)


@dataclass
class ProjectionStep:
    """What a progress callback sees after each step (tensors detached, on the working device)."""

    step: int  # 1-based
    num_steps: int
    loss: float
    latents: torch.Tensor  # current W+ code [num_ws, w_dim], without the exploration noise
    image: torch.Tensor  # the render this step was scored on [1, C, H, W] (with the noise)


def w_statistics(G, num_samples: int = 10_000, seed: int = 123, device="cpu") -> tuple[torch.Tensor, float]:
    """Mean w and its scalar spread over mapped random z (NVIDIA's projector estimate)."""
    z = torch.from_numpy(np.random.RandomState(seed).randn(num_samples, G.z_dim)).to(device, torch.float32)
    c = torch.zeros([num_samples, G.c_dim], device=device) if G.c_dim else None
    with torch.no_grad():
        w = G.mapping(z, c)[:, 0, :].to(torch.float32)
    w_avg = w.mean(dim=0)
    w_std = float(((w - w_avg).square().sum() / num_samples).sqrt())
    return w_avg, w_std


def _noise_penalty(noise_maps) -> torch.Tensor:
    """Squared autocorrelation of each noise map with its 1-pixel shifts, at every scale down to 8x8."""
    total = 0.0
    for buf in noise_maps:
        noise = buf[None, None]
        while True:
            total = total + (noise * torch.roll(noise, shifts=1, dims=3)).mean() ** 2
            total = total + (noise * torch.roll(noise, shifts=1, dims=2)).mean() ** 2
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return total


def _for_lpips(images: torch.Tensor) -> torch.Tensor:
    if images.shape[2] > LPIPS_SIZE:
        images = F.interpolate(images, size=(LPIPS_SIZE, LPIPS_SIZE), mode="area")
    return images


def _prepare_target(G, target: torch.Tensor, device) -> torch.Tensor:
    if target.ndim == 3:
        target = target.unsqueeze(0)
    if target.ndim != 4 or target.shape[0] != 1 or target.shape[1] != G.img_channels:
        raise SgtoolError(f"projection target must be [{G.img_channels}, H, W], got {tuple(target.shape)}")
    target = target.to(device, torch.float32)
    size = G.img_resolution
    if tuple(target.shape[2:]) != (size, size):
        target = F.interpolate(target, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return target


def project(G, target: torch.Tensor, num_steps: int = 500, space: str = "w+", init_latent=None,
            l2_weight: float = 1.0, lpips_model=None, seed: int = 0, transform: torch.Tensor | None = None,
            initial_learning_rate: float | None = None, initial_noise_factor: float | None = None,
            lr_rampdown_length: float = 0.25, lr_rampup_length: float = 0.05, noise_ramp_length: float = 0.75,
            regularize_noise_weight: float = 1e5,
            w_avg_samples: int = 10_000, precision: str = "fp32", mask=None, noise_steps: int = 0,
            noise_learning_rate: float = 0.1, fixed_noise: bool = False,
            callback: Callable[[ProjectionStep], bool | None] | None = None) -> ProjectionResult:
    """Find the latent whose render matches `target` ([3, H, W] in [-1, 1], resized to G's resolution).

    `init_latent` ([num_ws, w_dim]) starts the search there instead of at w_avg (in W space its
    mean over styles). `lpips_model` defaults to LPIPS-VGG with pretrained weights.
    `callback(ProjectionStep)` is called after every step; returning True stops the run there.
    `initial_noise_factor` None: NVIDIA's 0.05 in W; 0.01 in W+, where every style gets its own
    noise draw and the same factor would perturb the image far more (and slows convergence).
    `precision` bf16 (or auto) renders and scores in bfloat16 where the device supports it, as PTI does.
    `mask` ([H, W], 1 where the target is matched, 0 where it is unknown) weighs both losses; `noise_steps`
    then fits StyleGAN2's noise maps that many steps (W+N, returned in `noise`). `fixed_noise` keeps the
    generator's own constant noise maps untouched, so the latent renders as it was scored (masked edits).
    """
    if space not in ("w", "w+"):
        raise SgtoolError(f"--space must be w or w+, got {space!r}")
    if num_steps < 1:
        raise SgtoolError(f"--num-steps must be at least 1, got {num_steps}")
    device = next(G.parameters()).device
    if noise_steps and G.kind != "stylegan2":
        raise SgtoolError(f"projector.noise_steps (W+N) needs a StyleGAN2 generator: {G.kind} has no noise inputs; "
                          "set it to 0")
    precision = resolve_precision(precision, device, setting="projector.precision")
    if lpips_model is None:
        from ...losses import load_lpips

        lpips_model = load_lpips("vgg", device=device)
    initial_learning_rate = 0.1 if initial_learning_rate is None else initial_learning_rate
    if initial_noise_factor is None:
        initial_noise_factor = 0.05 if space == "w" else 0.01
    start = time.perf_counter()
    # Our own copy: noise maps get optimised in place and gradients must flow through it.
    G = copy.deepcopy(G).eval().requires_grad_(False)
    rng = torch.Generator(device=device).manual_seed(int(seed))
    target = _prepare_target(G, target, device)
    weights = None if mask is None else mask_weights(mask, G.img_resolution, device)
    # The masked perceptual loss compares the images with their unknown part blanked (Image2StyleGAN++).
    target_lpips = _for_lpips(target if weights is None else target * weights)

    w_avg, w_std = w_statistics(G, w_avg_samples, device=device)
    num_ws = G.num_ws
    if init_latent is None:
        start_latent = w_avg.reshape(1, 1, -1).repeat(1, 1 if space == "w" else num_ws, 1)
    else:
        start_latent = torch.as_tensor(init_latent, dtype=torch.float32).to(device).reshape(1, num_ws, G.w_dim)
        if space == "w":
            start_latent = start_latent.mean(dim=1, keepdim=True)
    w_opt = start_latent.detach().clone().requires_grad_(True)

    noise_maps = [] if fixed_noise else [buf for name, buf in G.synthesis.named_buffers()
                                         if name.endswith("noise_const")]
    with torch.no_grad():
        for buf in noise_maps:
            buf.copy_(torch.randn(buf.shape, generator=rng, device=device))
    for buf in noise_maps:
        buf.requires_grad_(True)
    optimizer = torch.optim.Adam([w_opt] + noise_maps, betas=(0.9, 0.999), lr=initial_learning_rate)

    render_kwargs = {"noise_mode": "const"}
    if G.kind == "stylegan3":
        render_kwargs["transform"] = torch.eye(3, device=device) if transform is None else transform.to(device)
    losses, distances = [], []
    stopped_early, diverged_at = False, None
    for step in range(num_steps):
        t = step / num_steps
        noise_scale = w_std * initial_noise_factor * max(0.0, 1.0 - t / noise_ramp_length) ** 2
        lr_ramp = min(1.0, (1.0 - t) / lr_rampdown_length)
        lr_ramp = 0.5 - 0.5 * np.cos(lr_ramp * np.pi)
        lr_ramp = lr_ramp * min(1.0, t / lr_rampup_length)
        for group in optimizer.param_groups:
            group["lr"] = initial_learning_rate * lr_ramp

        w_noise = torch.randn(w_opt.shape, generator=rng, device=device) * noise_scale
        ws = (w_opt + w_noise).expand(1, num_ws, G.w_dim)
        with autocast(precision, device):
            synth = G.synthesis(ws, **render_kwargs)
            dist = lpips_model(_for_lpips(synth if weights is None else synth * weights), target_lpips).float().sum()
        synth = synth.float()
        if l2_weight:
            dist = dist + l2_weight * masked_mse(synth, target, weights)
        loss = dist + regularize_noise_weight * _noise_penalty(noise_maps) if noise_maps else dist

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if not (torch.isfinite(loss) and torch.isfinite(w_opt.grad).all()):
            # The step would poison the latent: keep the last good one and stop.
            diverged_at = step + 1
            stopped_early = True
            break
        optimizer.step()
        with torch.no_grad():
            for buf in noise_maps:
                buf -= buf.mean()
                buf *= buf.square().mean().rsqrt()
        losses.append(float(loss.detach()))
        distances.append(float(dist.detach()))
        if callback is not None:
            current = w_opt.detach().expand(1, num_ws, G.w_dim)[0]
            if callback(ProjectionStep(step + 1, num_steps, losses[-1], current, synth.detach())):
                stopped_early = step + 1 < num_steps
                break

    latents = w_opt.detach().expand(1, num_ws, G.w_dim)[0].clone()
    noise = None
    if noise_steps and not stopped_early:
        noise = fit_noise(G, latents, target, weights, noise_steps, noise_learning_rate, num_steps, losses,
                          distances, callback, ProjectionStep)
    return ProjectionResult(latents=latents, losses=losses, distances=distances, noise=noise,
                            seconds=time.perf_counter() - start, stopped_early=stopped_early, diverged_at=diverged_at)
