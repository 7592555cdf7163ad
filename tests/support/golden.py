"""The golden reference data beside the repository (`../shared/golden/`) and small models built on it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

GOLDEN = (Path(__file__).resolve().parents[2] / ".." / "shared" / "golden").resolve()
GENERATOR_FIXTURES = ("sg3t_64", "sg3r_64", "sg2_64")


def golden_dir(*parts: str) -> Path:
    path = GOLDEN.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"golden reference data not found at {path} (it ships beside the repository in CI)")
    return path


def small_stylegan3_w512(seed: int = 0):
    """A 64 px StyleGAN3 with the real 16 x 512 latent layout: the golden ReStyle encoders invert into it
    quickly (their own decoder renders 512 px, seconds per frame on a CPU)."""
    from sgtool.models import build_generator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_generator("stylegan3", dict(z_dim=512, w_dim=512, c_dim=0, img_resolution=64, img_channels=3,
                                                 channel_base=1024, channel_max=16, mapping_kwargs={"num_layers": 2}))
