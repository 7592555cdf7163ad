"""`sgtool mix` as a library: the listed style inputs of one code over another, as in NVIDIA's style-mixing
figure. Rows give every style input but `--layers`, columns give those.

    ws = mix_styles(row_ws, col_ws, layers=range(8, 16))   # W+ [num_ws, w_dim]: row's, with col's rows 8-15
    record = run_mix(plan_mix(["a_latent.npy", "b_latent.npy"], MixSettings(network="G.pkl", layers=[8, 9])))

With two latent files A B: A_mix_B.png/.npy and a 1 x 1 grid; with more, every pair (rows = columns = the
inputs); with --rows/--cols seeds, NVIDIA's figure (psi `trunc`). Also mix.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import SgtoolError
from ..latents import latent_stem, load_latents
from ..progress import SILENT, Reporter
from ..device import resolve_device
from ..models import load_generator
from ..settings import MixSettings
from ..utils.io import save_image, save_npy, to_uint8, write_json
from .shared.batch import LATENT_SUFFIXES, collect
from .shared.render import check_layers, device_of, render

MIX_RECORD = "mix.json"
MAX_SEEDS = 32


def mix_styles(row_ws: torch.Tensor, col_ws: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
    """A copy of `row_ws` ([..., num_ws, w_dim]) whose style inputs `layers` come from `col_ws`."""
    mixed = row_ws.clone()
    index = list(layers)
    if index:
        mixed[..., index, :] = col_ws[..., index, :]
    return mixed


@dataclass
class MixPlan:
    """One `sgtool mix` run, checked before anything loads: latent files, or none when the codes are seeds."""

    settings: MixSettings
    latents: list[Path] = field(default_factory=list)


def plan_mix(latents: Sequence[str | Path], settings: MixSettings) -> MixPlan:
    """Check the inputs and settings of a mix (nothing loaded or written)."""
    if settings.network is None:
        raise SgtoolError("give --network: the generator the latents (or seeds) belong to")
    if settings.layers is None:
        raise SgtoolError("give --layers: the style inputs taken from the column code, e.g. 8-15 (fine styles) or "
                          "0-3 (coarse)")
    if settings.rows is not None or settings.cols is not None:
        if settings.rows is None or settings.cols is None:
            raise SgtoolError("mixing seeds needs both --rows and --cols")
        if latents:
            raise SgtoolError("give latent files or --rows/--cols seeds, not both")
        return MixPlan(settings)
    # Each argument in turn, repeats kept: a latent mixed with itself is the identity figure.
    files = [path for latent in latents for path in collect([latent], LATENT_SUFFIXES, "latent")]
    if len(files) < 2:
        raise SgtoolError("give two latent files (A B: B's --layers over A) or more, or --rows and --cols seeds")
    return MixPlan(settings, files)


def _seed_codes(generator, text: str, psi: float) -> list[tuple[str, torch.Tensor]]:
    from ..utils.parsing import seed_ranges

    seeds = [seed for block in seed_ranges(text) for seed in block[:MAX_SEEDS + 1]]
    if len(seeds) > MAX_SEEDS:
        raise SgtoolError(f"--rows/--cols {text}: at most {MAX_SEEDS} seeds per side of one figure")
    codes = []
    for seed in seeds:
        z = torch.from_numpy(np.random.RandomState(seed).randn(1, generator.z_dim)).to(device_of(generator))
        with torch.no_grad():
            ws = generator.mapping(z.to(torch.float32), None, truncation_psi=psi)
        codes.append((f"seed{seed:04d}", ws[0]))
    return codes


def _file_codes(generator, files: Sequence[Path], step: int) -> list[tuple[str, torch.Tensor]]:
    codes = []
    for path in files:
        latents = load_latents(path, generator.num_ws, generator.w_dim, step)
        names = [latent_stem(path)] if len(latents) == 1 else [f"{latent_stem(path)}_{key}" for key in latents]
        codes += [(name, torch.from_numpy(latent).to(device_of(generator))) for name, latent in
                  zip(names, latents.values())]
    return codes


def mix_grid(generator, rows: list[tuple[str, torch.Tensor]], cols: list[tuple[str, torch.Tensor]],
             layers: Sequence[int], noise_mode: str = "const") -> tuple[np.ndarray, np.ndarray]:
    """(the figure: a blank corner, the column renders along the top, the row renders down the left and every
    mix in between, uint8; the mixed codes [rows, cols, num_ws, w_dim])."""
    row_ws = torch.stack([ws for _, ws in rows])
    col_ws = torch.stack([ws for _, ws in cols])
    mixed = mix_styles(row_ws[:, None].expand(-1, len(cols), -1, -1), col_ws[None].expand(len(rows), -1, -1, -1),
                       layers)
    row_images = to_uint8(render(generator, row_ws, noise_mode=noise_mode))
    col_images = to_uint8(render(generator, col_ws, noise_mode=noise_mode))
    cells = to_uint8(torch.cat([render(generator, mixed[r], noise_mode=noise_mode) for r in range(len(rows))]))
    size, channels = row_images.shape[1], row_images.shape[3]
    canvas = np.full(((len(rows) + 1) * size, (len(cols) + 1) * size, channels), 255, np.uint8)
    for c, image in enumerate(col_images):
        canvas[:size, (c + 1) * size:(c + 2) * size] = image
    for r, image in enumerate(row_images):
        canvas[(r + 1) * size:(r + 2) * size, :size] = image
        for c in range(len(cols)):
            canvas[(r + 1) * size:(r + 2) * size, (c + 1) * size:(c + 2) * size] = cells[r * len(cols) + c]
    return canvas, mixed.cpu().numpy()


def run_mix(plan: MixPlan, reporter: Reporter = SILENT, generator=None) -> dict:
    """The grid (and for two latents the one mix) in OUTDIR; returns mix.json's record. `generator`: an already
    loaded network instead of settings.network."""
    settings = plan.settings
    if generator is None:
        generator = load_generator(settings.network, device=resolve_device(settings.device))
    check_layers(generator, settings.layers)
    outdir = Path(settings.outdir)
    if plan.latents:
        codes = _file_codes(generator, plan.latents, settings.step)
        if len(codes) > MAX_SEEDS:
            raise SgtoolError(f"the latent files hold {len(codes)} codes; one figure mixes at most {MAX_SEEDS} per "
                              "side (give fewer files, or --rows/--cols seeds)")
        rows, cols = (codes[:1], codes[1:2]) if len(codes) == 2 else (codes, codes)
    else:
        rows = _seed_codes(generator, settings.rows, settings.trunc)
        cols = _seed_codes(generator, settings.cols, settings.trunc)
    reporter.start("style mixing", len(rows))
    grid, mixed = mix_grid(generator, rows, cols, settings.layers, settings.noise_mode)
    reporter.advance(len(rows))
    reporter.finish()
    outputs = {"grid": str(save_image(grid, outdir / "mix_grid.png"))}
    if len(rows) == len(cols) == 1 and plan.latents:
        name = f"{rows[0][0]}_mix_{cols[0][0]}"
        size = generator.img_resolution
        outputs["image"] = str(save_image(grid[size:, size:], outdir / f"{name}.png"))
        outputs["latent"] = str(save_npy(mixed[0, 0].astype(np.float32), outdir / f"{name}.npy"))
    record = {"rows": [name for name, _ in rows], "cols": [name for name, _ in cols], "layers": settings.layers,
              "network": str(settings.network), "outputs": outputs, "settings": settings.record()}
    write_json(record, outdir / MIX_RECORD)
    return record
