"""Directions without a classifier (SeFa, from the generator's weights) and from scores (InterFaceGAN boundaries)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..editing.boundary import read_scores_csv, train_boundary
from ..editing.directions import Edit, apply_edits, format_strength
from ..editing.sefa import sefa_directions
from ..errors import SgtoolError
from ..latents import load_latents
from ..settings import EditSettings
from ..utils.io import save_image, save_npy, to_uint8, write_json
from .edit_requests import check_layers
from .edit_sweeps import labelled_grid
from .generate import seed_to_z
from .render import device_of, render


def discover_sefa(generator, outdir: Path, top: int = 10, layers: Sequence[int] | None = None,
                  preview_ws: torch.Tensor | None = None, preview_strengths: np.ndarray | None = None,
                  transform=None, noise_mode: str = "const") -> dict:
    """Write sefa_00.npy ... ([1, w_dim] unit directions, strongest first) and a preview grid
    (rows = directions, columns = strengths applied to `preview_ws` on the chosen layers); returns their record."""
    outdir = Path(outdir)
    directions, eigenvalues, names = sefa_directions(generator, layers, top)
    files = [str(save_npy(d[None].astype(np.float32), outdir / f"sefa_{k:02d}.npy")) for k, d in enumerate(directions)]
    summary = {"method": "sefa", "layers": list(layers) if layers is not None else None, "style_layers": names,
               "eigenvalues": eigenvalues.tolist(), "directions": files}
    if preview_ws is not None:
        strengths = preview_strengths if preview_strengths is not None else np.linspace(-5, 5, 5)
        rows = []
        for k, direction in enumerate(directions):
            edited = torch.cat([apply_edits(preview_ws, [Edit(f"sefa{k}", float(s), direction[None])], layers)
                                for s in strengths])
            rows.append(list(to_uint8(render(generator, edited, transform, noise_mode))))
        grid = labelled_grid(rows, [f"{format_strength(s)}" for s in strengths])
        summary["preview"] = str(save_image(grid, outdir / "sefa_preview.png"))
        summary["preview_strengths"] = [float(s) for s in strengths]
    return summary


def sefa_preview_latent(generator, latent_files: Sequence[Path], settings: EditSettings) -> tuple[torch.Tensor, str]:
    """The latent SeFa's preview edits: the first entry of the first latent file, else mapping(preview_seed)
    truncated by preview_trunc. Returns (ws [1, num_ws, w_dim], its name)."""
    device = device_of(generator)
    if latent_files:
        name, latent = next(iter(load_latents(latent_files[0], generator.num_ws, generator.w_dim,
                                              settings.step).items()))
        return torch.from_numpy(latent).to(device)[None], name
    if generator.c_dim:
        raise SgtoolError("this network is conditional: give a latent file for the SeFa preview")
    z = seed_to_z(settings.preview_seed, generator.z_dim).to(device)
    with torch.no_grad():
        ws = generator.mapping(z, None, truncation_psi=settings.preview_trunc)
    return ws, f"seed{settings.preview_seed}"


def discover_directions(generator, settings: EditSettings, latent_files: Sequence[Path] = ()) -> dict:
    """`sgtool edit --discover sefa`: the directions, their preview and OUTDIR/sefa.json."""
    check_layers(generator, settings.layers)
    preview_ws, name = sefa_preview_latent(generator, latent_files, settings)
    summary = discover_sefa(generator, settings.outdir, settings.top, settings.layers, preview_ws,
                            np.linspace(*settings.sefa_preview), noise_mode=settings.noise_mode)
    summary.update(network=str(settings.network), preview_latent=name, settings=settings.record())
    write_json(summary, Path(settings.outdir) / "sefa.json")
    return summary


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


def train_boundary_run(settings: EditSettings) -> dict:
    """`sgtool edit --train-boundary scores.csv`: the boundary and OUTDIR/NAME_boundary.json (with the settings)."""
    summary = train_boundary_from_csv(settings.train_boundary, settings.outdir, settings.boundary_name,
                                      ratio=settings.boundary_ratio, split=settings.boundary_split,
                                      seed=settings.boundary_seed, space=settings.boundary_space)
    summary["settings"] = settings.record()
    write_json(summary, Path(settings.outdir) / f"{summary['name']}_boundary.json")
    return summary
