"""`sgtool directions boundary`: an InterFaceGAN boundary from a CSV of latent files and attribute scores.

    summary = run_boundary("smile.csv", BoundarySettings(outdir="out/boundaries"))   # smile_boundary.npy
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...editing.boundary import read_scores_csv, train_boundary
from ...settings import BoundarySettings
from ...utils.io import save_npy, write_json


def train_boundary_from_csv(csv_path: Path, outdir: Path, name: str | None = None, num_ws: int | None = None,
                            w_dim: int | None = None, ratio: float = 0.02, split: float = 0.7, seed: int = 0,
                            space: str = "w") -> dict:
    """scores CSV -> NAME_boundary.npy ([1, w_dim], or [num_ws, w_dim] for space wplus) and its record."""
    latents, scores, latent_shape = read_scores_csv(csv_path, num_ws, w_dim, space)
    result = train_boundary(latents, scores, ratio, split, seed)
    normal = result.normal.reshape(latent_shape) if space == "wplus" else result.normal[None]
    name = name or Path(csv_path).stem
    path = save_npy(normal.astype(np.float32), Path(outdir) / f"{name}_boundary.npy")
    return {"boundary": str(path), "name": name, "space": space, "samples": result.num_samples,
            "train_per_class": result.train_per_class, "val_per_class": result.val_per_class,
            "val_accuracy": result.val_accuracy, "remaining_accuracy": result.remaining_accuracy,
            "ratio": ratio, "split": split, "seed": seed, "scores": str(csv_path)}


def run_boundary(scores_csv: Path, settings: BoundarySettings) -> dict:
    """The boundary and OUTDIR/NAME_boundary.json (with the settings)."""
    summary = train_boundary_from_csv(scores_csv, settings.outdir, settings.name, ratio=settings.ratio,
                                      split=settings.split, seed=settings.seed, space=settings.space)
    summary["settings"] = settings.record()
    write_json(summary, Path(settings.outdir) / f"{summary['name']}_boundary.json")
    return summary
