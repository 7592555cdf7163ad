"""Reconstruction metrics for inversion: MSE, PSNR, LPIPS, MS-SSIM and ArcFace identity similarity.

All take image batches [B, 3, H, W] in [-1, 1] (clamped to that range first) and return one value
per image. `compare_images` resizes both sides to a common size (at most 256, like the
ReStyle/e4e evaluation scripts) and bundles every metric into one dict per image.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch.nn import functional as F

from .errors import CheckpointError, SgtoolError

METRICS_SIZE = 256
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _clamped(a: torch.Tensor, b: torch.Tensor):
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    return a.to(torch.float32).clamp(-1, 1), b.to(torch.float32).clamp(-1, 1)


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error in [-1, 1] units, per image."""
    a, b = _clamped(a, b)
    return (a - b).square().flatten(1).mean(1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB (peak-to-peak range 2), per image; inf for identical images."""
    return 10 * torch.log10(4.0 / mse(a, b))


def _gaussian_window(size: int, sigma: float = 1.5, device=None) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-coords.square() / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(3, 1, size, size).contiguous()


def _ssim_terms(a, b, window_size: int):
    """Mean SSIM and mean contrast-structure term per image, on [0, 1] images (valid convolution)."""
    size = min(window_size, a.shape[2], a.shape[3])
    window = _gaussian_window(size, device=a.device)
    c1, c2 = 0.01 ** 2, 0.03 ** 2

    def blur(x):
        return F.conv2d(x, window, groups=3)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a.square()
    var_b = blur(b * b) - mu_b.square()
    cov = blur(a * b) - mu_a * mu_b
    cs = (2 * cov + c2) / (var_a + var_b + c2)
    ssim_map = (2 * mu_a * mu_b + c1) / (mu_a.square() + mu_b.square() + c1) * cs
    return ssim_map.flatten(1).mean(1), cs.flatten(1).mean(1)


def ms_ssim(a: torch.Tensor, b: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """Multi-scale SSIM (Wang et al. 2003; 5 scales, Gaussian window 11 / sigma 1.5), per image.

    Small images shrink the window at coarse scales instead of failing. Negative contrast terms
    are clipped to 0 so the weighted product stays defined.
    """
    a, b = _clamped(a, b)
    a, b = (a + 1) / 2, (b + 1) / 2
    weights = torch.tensor(MS_SSIM_WEIGHTS, device=a.device)
    terms = []
    for level in range(len(MS_SSIM_WEIGHTS)):
        ssim_value, cs = _ssim_terms(a, b, window_size)
        terms.append(ssim_value if level == len(MS_SSIM_WEIGHTS) - 1 else cs)
        if min(a.shape[2:]) >= 2:
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    stacked = torch.stack(terms, dim=1).clamp_min(0)
    return (stacked ** weights).prod(dim=1)


class IdentityModel(torch.nn.Module):
    """ArcFace IR-SE50 embeddings compared as pSp/e4e's identity loss does (crop, pool to 112)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net.eval().requires_grad_(False)

    @classmethod
    def load(cls, path, device="cpu") -> "IdentityModel":
        from .models.encoders import ArcFaceIRSE, load_module_state

        path = Path(path)
        if not path.is_file():
            raise SgtoolError(f"--id-model {path} does not exist; download model_ir_se50.pth (the ArcFace IR-SE50 "
                              "released with pSp/e4e) and pass its path")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling refusals and corrupt files read the same to the user
            raise CheckpointError(f"cannot read --id-model {path} as a weights-only state dict "
                                  f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or "input_layer.0.weight" not in state:
            raise CheckpointError(f"--id-model {path} is not an ArcFace IR-SE50 state dict (no input_layer.0.weight)")
        net = ArcFaceIRSE(num_layers=50, input_size=112)
        load_module_state(net, state, f"--id-model {path}")
        return cls(net).to(device)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[2] != 256:
            images = F.adaptive_avg_pool2d(images, (256, 256))
        face = images[:, :, 35:223, 32:220]  # the central face region the ArcFace was trained on
        return self.net(F.adaptive_avg_pool2d(face, (112, 112)))

    @torch.no_grad()
    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (self.embed(a.to(torch.float32)) * self.embed(b.to(torch.float32))).sum(dim=1)


def resize_to(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    if images.shape[-1] > size:
        return F.interpolate(images, size=(size, size), mode="area")
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


@torch.no_grad()
def compare_images(recon: torch.Tensor, target: torch.Tensor, lpips_model=None,
                   id_model: IdentityModel | None = None) -> list[dict]:
    """Per-image metrics of `recon` against `target` (both [B, 3, H, W] in [-1, 1])."""
    size = min(METRICS_SIZE, recon.shape[-1], target.shape[-1])
    recon, target = resize_to(recon.to(torch.float32), size), resize_to(target.to(torch.float32), size)
    values = {"mse": mse(recon, target), "psnr": psnr(recon, target), "ms_ssim": ms_ssim(recon, target)}
    if lpips_model is not None:
        device = next(lpips_model.parameters()).device
        values["lpips"] = lpips_model(recon.clamp(-1, 1).to(device), target.clamp(-1, 1).to(device)).flatten()
    if id_model is not None:
        device = next(id_model.parameters()).device
        values["id_similarity"] = id_model.similarity(recon.to(device), target.to(device))
    return [{k: float(v[i]) for k, v in values.items()} for i in range(recon.shape[0])]


def summarize(records: list[dict]) -> dict:
    """Mean of every numeric metric over the images (infinite PSNRs are left out of its mean)."""
    keys = sorted({k for r in records for k, v in r.items() if isinstance(v, (int, float))})
    out = {}
    for key in keys:
        values = [r[key] for r in records if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        if values:
            out[key] = sum(values) / len(values)
    return out
