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
