"""Shared fixtures: the golden reference data beside the repository and small helpers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

GOLDEN = (Path(__file__).resolve().parents[1] / ".." / "shared" / "golden").resolve()
GENERATOR_FIXTURES = ("sg3t_64", "sg3r_64", "sg2_64")


def golden_dir(*parts: str) -> Path:
    path = GOLDEN.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"golden reference data not found at {path} (it ships beside the repository in CI)")
    return path


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Reference outputs were produced with 2 threads; keep runs comparable and quiet.
    torch.set_num_threads(2)


@pytest.fixture
def golden_generator_files():
    def files(name: str):
        folder = golden_dir("generators")
        meta = json.loads((folder / f"{name}.json").read_text())
        io = dict(np.load(folder / f"{name}_io.npz"))
        state = dict(np.load(folder / f"{name}_state.npz"))
        return folder / f"{name}.pkl", meta, io, state

    return files


def small_stylegan3_w512(seed: int = 0):
    """A 64 px StyleGAN3 with the real 16 x 512 latent layout: the golden ReStyle encoders invert into it
    quickly (their own decoder renders 512 px, seconds per frame on a CPU)."""
    from sgtool.models import build_generator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_generator("stylegan3", dict(z_dim=512, w_dim=512, c_dim=0, img_resolution=64, img_channels=3,
                                                 channel_base=1024, channel_max=16, mapping_kwargs={"num_layers": 2}))
