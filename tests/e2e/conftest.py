"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import pytest

from support.golden import golden_dir
from support.training import E4E_FAST, SG2, TINY, train


@pytest.fixture(scope="session")
def e4e_run(tmp_path_factory):
    """A tiny e4e (progressive, latent discriminator) trained 300 steps on the golden StyleGAN2: the 3x check,
    HyperStyle's W encoder, and the W+ encoder SFE measures edits with and is compared to."""
    golden_dir("generators")  # said plainly where the data is missing
    run = tmp_path_factory.mktemp("train") / "e4e"
    train("-n", SG2, "--synthetic", "--arch", "e4e", *TINY, *E4E_FAST, "--steps", 300, "--batch-size", 4,
          "--val-every", 300, "--save-every", 300, "-o", run)
    return run
