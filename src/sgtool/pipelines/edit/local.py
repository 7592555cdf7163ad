"""Edits confined to a region by masked optimisation (Image2StyleGAN++'s local edits), not by pasting pixels.

Each is the embedding of a composite: a W+ latent whose render matches one image inside a soft region and
another outside it, found by the projection (LPIPS + MSE) from a nearby latent with the generator's own noise.

    latent = local_edit(G, w, request, region)            # the edit inside `region`, the unedited render outside
    latent = scribble_edit(G, w, strokes, mask)          # painted strokes made real, the rest kept
    latent = embed_composite(G, a, b, region)            # crossover: image a inside, image b outside

`region` / `mask`: [H, W] in [0, 1] (any size, resized to the generator's). From the command line:
`sgtool edit LATENT -n G --edit age=+3 --region mouth.png`, `--scribble strokes.png`, `--crossover A B --mask M`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ...errors import SgtoolError
from ...settings import LocalOptions
from ..invert.masks import mask_weights, masked_mse
from ..invert.project import project
from ..shared.render import as_transform, device_of, render

# What differs from the original by less than this (in [-1, 1] units, any channel) is not a stroke.
STROKE_THRESHOLD = 4 / 127.5


def feathered(region, resolution: int, feather: float, device) -> torch.Tensor:
    """The region as weights [1, 1, R, R], its edge blurred over `feather` x R pixels (Gaussian sigma)."""
    weights = mask_weights(region, resolution, device)
    sigma = feather * resolution
    if sigma <= 0:
        return weights
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, device=device, dtype=torch.float32) / sigma) ** 2)
    taps = taps / taps.sum()
    padded = F.pad(weights, (radius, radius, radius, radius), mode="replicate")
    blurred = F.conv2d(F.conv2d(padded, taps.view(1, 1, 1, -1)), taps.view(1, 1, -1, 1))
    return blurred.clamp(0, 1)


def embed_composite(G, inside: torch.Tensor, outside: torch.Tensor, region, options: LocalOptions | None = None,
                    init_latent=None, lpips_model=None, transform=None, callback=None) -> torch.Tensor:
    """The W+ latent [num_ws, w_dim] whose render matches `inside` ([3, R, R] in [-1, 1]) under the feathered
    region and `outside` elsewhere; the search starts at `init_latent` (else w_avg) and keeps G's noise."""
    options = options or LocalOptions()
    device = device_of(G)
    transform = as_transform(G, transform)
    size = G.img_resolution
    weights = feathered(region, size, options.feather, device)
    inside, outside = (_at(image, size, device) for image in (inside, outside))
    composite = weights * inside + (1 - weights) * outside
    schedule = {"initial_learning_rate": options.learning_rate, "initial_noise_factor": 0.0,
                "w_avg_samples": options.w_avg_samples}
    result = project(G, composite[0], num_steps=options.steps, space="w+", init_latent=init_latent,
                     l2_weight=options.l2_weight, lpips_model=lpips_model, seed=options.seed, transform=transform,
                     fixed_noise=True, callback=callback, **schedule)
    if result.diverged_at is not None:
        raise SgtoolError(f"the masked optimisation's loss was not finite at step {result.diverged_at}; lower "
                          "local.learning_rate")
    return result.latents


def local_edit(G, latent: torch.Tensor, request, region, options: LocalOptions | None = None, lpips_model=None,
               transform=None, callback=None) -> torch.Tensor:
    """`request` (an EditRequest: directions, style channels or text) applied inside `region` only: a W+
    latent rendering the edit there and the unedited render of `latent` ([num_ws, w_dim]) outside."""
    ws = torch.as_tensor(latent, dtype=torch.float32).to(device_of(G)).reshape(1, G.num_ws, G.w_dim)
    edited = request.edit(G, ws)
    inside, outside = render(G, edited, transform), render(G, ws, transform)
    start = edited if isinstance(edited, torch.Tensor) else ws  # an S edit starts from the unedited code
    return embed_composite(G, inside[0], outside[0], region, options, start[0], lpips_model, transform, callback)


def stroke_mask(painted: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Where a painted copy ([H, W, 3] uint8) differs from the original: the strokes, [H, W] in {0, 1}."""
    if painted.shape != original.shape:
        raise SgtoolError(f"the scribbled image is {painted.shape[1]}x{painted.shape[0]} but the image it was "
                          f"painted on is {original.shape[1]}x{original.shape[0]}: paint on a copy of that image")
    diff = np.abs(painted.astype(np.int16) - original.astype(np.int16)).max(axis=2)
    return (diff > STROKE_THRESHOLD * 127.5).astype(np.float32)


def scribble_edit(G, latent: torch.Tensor, strokes: torch.Tensor, mask, options: LocalOptions | None = None,
                  lpips_model=None, transform=None, callback=None) -> torch.Tensor:
    """Strokes painted on `latent`'s render ([3, R, R] in [-1, 1]) matched inside `mask`, the rest kept."""
    ws = torch.as_tensor(latent, dtype=torch.float32).to(device_of(G)).reshape(1, G.num_ws, G.w_dim)
    if float(np.asarray(mask).max()) <= 0:
        raise SgtoolError("the scribble changes no pixel of the render: paint strokes on a copy of it")
    original = render(G, ws, transform)[0]
    return embed_composite(G, strokes, original, mask, options, ws[0], lpips_model, transform, callback)


@torch.no_grad()
def inside_outside_errors(image: torch.Tensor, inside: torch.Tensor, outside: torch.Tensor, region) -> dict:
    """MSE of `image` against `inside` under the region and against `outside` beyond it ([1, 3, R, R])."""
    weights = mask_weights(region, image.shape[-1], image.device)
    inside, outside = (_at(x, image.shape[-1], image.device) for x in (inside, outside))
    return {"inside_mse": float(masked_mse(image.float(), inside, weights)),
            "outside_mse": float(masked_mse(image.float(), outside, 1 - weights))}


def _at(image: torch.Tensor, size: int, device) -> torch.Tensor:
    image = torch.as_tensor(image, dtype=torch.float32).to(device)
    image = image.reshape(1, -1, *image.shape[-2:])
    if image.shape[-2:] != (size, size):
        image = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return image


_LPIPS: dict = {}


def local_lpips(settings, device):
    """LPIPS-VGG of the masked optimisation, loaded once per run."""
    from ...losses import load_lpips

    key = (str(device), settings.invert.lpips_random_backbone)
    if key not in _LPIPS:
        _LPIPS[key] = load_lpips("vgg", device, random_backbone=settings.invert.lpips_random_backbone)
    return _LPIPS[key]


def write_local_edit(G, ws: torch.Tensor, request, settings, stem, transform=None) -> dict[str, str]:
    """`sgtool edit LATENT --region FILE` / `--scribble FILE`: the masked optimisation's latent and render,
    written as STEM_LABEL.npy / .png (or STEM_scribble.npy / .png); `stem`: OUTDIR/NAME."""
    from ...utils.io import save_image, save_npy, to_uint8
    from ..invert.masks import REGION, fit_mask, read_mask
    from ..shared.images import generator_target, read_image

    device, size = device_of(G), int(G.img_resolution)
    if settings.scribble is not None:
        painted = read_image(settings.scribble)
        strokes = stroke_mask(painted, to_uint8(render(G, ws, transform))[0])
        latent = scribble_edit(G, ws[0], generator_target(painted, size), strokes, settings.local,
                               local_lpips(settings, device), transform)
        base = f"{stem}_scribble"
    else:
        region = fit_mask(read_mask(settings.region, white=REGION), size, size, str(settings.region))
        latent = local_edit(G, ws[0], request, region, settings.local, local_lpips(settings, device), transform)
        base = f"{stem}_{request.label}"
    image = to_uint8(render(G, latent[None], transform))[0]
    return {"image": str(save_image(image, f"{base}.png")),
            "latent": str(save_npy(latent.cpu().numpy().astype(np.float32), f"{base}.npy"))}
