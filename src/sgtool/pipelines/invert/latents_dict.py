"""latents.npy: every latent of an invert run in stylegan3-editing's layout (file name -> per-step W+ codes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import SgtoolError
from ...utils.batch import Shard
from ...utils.io import save_npy


def write_latents_dict(outdir: Path, latents: dict[str, list[np.ndarray]], keep_existing: bool,
                       shard: Shard | None) -> Path | None:
    """One latents.npy for the run in stylegan3-editing's layout: file name -> list of per-step W+ codes."""
    from ...utils.batch import shard_file_name

    path = outdir / shard_file_name("latents.npy", shard)
    if keep_existing and path.is_file():
        from ...latents import load_npy

        try:
            previous = load_npy(path)
        except SgtoolError:
            previous = None
        if isinstance(previous, dict):
            latents = {**{str(k): list(v) if isinstance(v, (list, tuple)) else [v] for k, v in previous.items()},
                       **latents}
    if not latents:
        return None
    return save_npy(np.array(latents, dtype=object), path, allow_pickle=True)
