"""Fixtures every test folder shares (helpers that are not fixtures live in `support/`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from support.golden import golden_dir


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
