"""`sgtool directions sefa`: directions without labels, from the generator's style weights (SeFa).

    summary = run_sefa(SefaSettings(network="G.pkl", top=10, outdir="out/sefa"))   # sefa_00.npy ... + preview
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ...editing.directions import Edit, apply_edits, format_strength
from ...editing.sefa import sefa_directions
from ...errors import SgtoolError
from ...latents import load_latents
from ...device import resolve_device
from ...models import load_generator
from ...settings import SefaSettings
from ...utils.io import save_image, save_npy, to_uint8, write_json
from ..generate import seed_to_z
from ..shared.images import labelled_grid
from ..shared.render import check_layers, device_of, render


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


def sefa_preview_latent(generator, latent_files: Sequence[Path], settings: SefaSettings) -> tuple[torch.Tensor, str]:
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


def run_sefa(settings: SefaSettings, latent_files: Sequence[Path] = (), generator=None) -> dict:
    """The directions, their preview (on the first latent file's code, else a seed's) and OUTDIR/sefa.json.
    `generator`: an already loaded network instead of settings.network."""
    if generator is None:
        generator = load_generator(settings.network, device=resolve_device(settings.device))
    check_layers(generator, settings.layers)
    preview_ws, name = sefa_preview_latent(generator, latent_files, settings)
    summary = discover_sefa(generator, settings.outdir, settings.top, settings.layers, preview_ws,
                            np.linspace(*settings.preview), noise_mode=settings.noise_mode)
    summary.update(network=str(settings.network), preview_latent=name, settings=settings.record())
    write_json(summary, Path(settings.outdir) / "sefa.json")
    return summary
