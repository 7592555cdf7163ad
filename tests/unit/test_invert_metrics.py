"""Reconstruction metrics: MSE/PSNR by hand, MS-SSIM behaviour, ArcFace identity similarity."""

from __future__ import annotations

import math

import pytest
import torch

from sgtool.errors import CheckpointError, SgtoolError
from sgtool.losses import load_lpips
from sgtool.metrics import IdentityModel, compare_images, ms_ssim, mse, psnr, summarize
from sgtool.models.encoders import ArcFaceIRSE


def smooth_images(seed, n=2, size=64):
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=gen) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


def test_mse_and_psnr_by_hand():
    a = torch.zeros(1, 3, 4, 4)
    b = torch.full((1, 3, 4, 4), 0.2)
    assert float(mse(a, b)) == pytest.approx(0.04)
    assert float(psnr(a, b)) == pytest.approx(10 * math.log10(4 / 0.04))
    assert math.isinf(float(psnr(a, a)))
    # Values outside [-1, 1] are clamped first, as when saving images.
    assert float(mse(torch.full((1, 3, 2, 2), 3.0), torch.ones(1, 3, 2, 2))) == 0


def test_ms_ssim_is_one_for_identical_images_and_falls_with_noise():
    x = smooth_images(0, size=128)
    assert torch.allclose(ms_ssim(x, x), torch.ones(2), atol=1e-5)
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=gen)
    mild, strong = ms_ssim(x, x + 0.05 * noise), ms_ssim(x, x + 0.5 * noise)
    assert (mild < 1).all() and (strong < mild).all() and (strong >= 0).all()
    # Small images shrink the window instead of failing.
    assert ms_ssim(smooth_images(2, size=32), smooth_images(3, size=32)).shape == (2,)


def test_identity_model_loads_weights_only_and_compares_faces(tmp_path):
    torch.manual_seed(0)
    net = ArcFaceIRSE()
    path = tmp_path / "model_ir_se50.pth"
    torch.save(net.state_dict(), path)
    model = IdentityModel.load(path)
    x, y = smooth_images(4, size=256), smooth_images(5, size=256)
    same = model.similarity(x, x)
    assert torch.allclose(same, torch.ones(2), atol=1e-5)
    other = model.similarity(x, y)
    assert (other < same).all() and (other >= -1).all()
    bad = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="not an ArcFace"):
        IdentityModel.load(bad)
    with pytest.raises(SgtoolError, match="does not exist"):
        IdentityModel.load(tmp_path / "missing.pth")


def test_compare_images_reports_every_metric_per_image():
    torch.manual_seed(0)
    lp = load_lpips("alex", random_backbone=True)
    target = smooth_images(6, size=96)
    recon = (target + 0.1).clamp(-1, 1)
    rows = compare_images(recon, target, lpips_model=lp)
    assert len(rows) == 2 and set(rows[0]) == {"mse", "psnr", "ms_ssim", "lpips"}
    assert rows[0]["lpips"] > 0 and compare_images(target, target, lpips_model=lp)[0]["lpips"] == pytest.approx(0)
    mean = summarize(rows + [{"psnr": math.inf, "mse": 0.0}])
    assert mean["mse"] == pytest.approx((rows[0]["mse"] + rows[1]["mse"]) / 3)
    assert mean["psnr"] == pytest.approx((rows[0]["psnr"] + rows[1]["psnr"]) / 2)  # inf left out
