"""Seeds -> images, with NVIDIA's gen_images conventions (seeded z, truncation, input transform).

    summary = generate_images(GenerateSettings(network="stylegan3-r-ffhq-1024", seeds="0-99999"))

Seeds are read as lazy ranges and images rendered and written one at a time; grid.png keeps only
the first `grid_max` images and generate.json lists the first RECORD_LIMIT (the rest follow the
`seedNNNN.png` naming rule), so any range of seeds runs in constant memory.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from ..errors import SgtoolError
from ..geometry import input_transform
from ..progress import SILENT, Reporter
from ..settings import GenerateSettings
from ..settings.commands import SEED_LIMIT
from ..utils.io import image_grid, save_image, save_npy, to_uint8, write_json
from ..utils.records import read_json
from ..utils.parsing import seed_ranges
from .shared.batch import settings_differences
from .shared.render import device_of, render

GRID_COLUMNS = 8
RECORD_LIMIT = 10_000  # images listed one by one in generate.json


def seed_to_z(seed: int, z_dim: int) -> torch.Tensor:
    """The latent NVIDIA's gen_images.py draws for a seed, so seeds render the same images."""
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).to(torch.float32)


def class_label(generator, class_idx: int | None, device) -> torch.Tensor | None:
    if generator.c_dim == 0:
        if class_idx is not None:
            raise SgtoolError("--class was given but this network is unconditional; drop --class")
        return None
    if class_idx is None:
        raise SgtoolError(f"this network is conditional ({generator.c_dim} classes): pass --class N")
    if not 0 <= class_idx < generator.c_dim:
        raise SgtoolError(f"--class must be between 0 and {generator.c_dim - 1}, got {class_idx}")
    c = torch.zeros([1, generator.c_dim], device=device)
    c[:, class_idx] = 1
    return c


@dataclass
class Rendered:
    seed: int
    image: np.ndarray  # uint8 HWC
    ws: np.ndarray  # [num_ws, w_dim]


def transform_for(generator, rotate: float = 0.0, translate=(0.0, 0.0)) -> torch.Tensor | None:
    """Input transform for a rotated/translated StyleGAN3 render; None when there is nothing to do."""
    if rotate == 0 and tuple(translate) == (0.0, 0.0):
        return None
    if generator.kind != "stylegan3":
        raise SgtoolError("--rotate/--translate need a StyleGAN3 network (StyleGAN2 has no input transform)")
    return torch.from_numpy(input_transform(translate, rotate)).to(torch.float32)


def render_seeds(generator, seeds: Iterable[int], truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                 class_idx: int | None = None, noise_mode: str = "const", rotate: float = 0.0,
                 translate=(0.0, 0.0)) -> Iterator[Rendered]:
    """One image per seed, synthesis(mapping(z_seed)), each rendered as the iterator reaches it.

    The class and the transform are checked at the call, before any image.
    """
    c = class_label(generator, class_idx, device_of(generator))
    transform = transform_for(generator, rotate, translate)
    return _rendered(generator, seeds, c, transform, truncation_psi, truncation_cutoff, noise_mode)


def _rendered(generator, seeds, c, transform, truncation_psi, truncation_cutoff, noise_mode) -> Iterator[Rendered]:
    for seed in seeds:
        with torch.no_grad():
            ws = generator.mapping(seed_to_z(seed, generator.z_dim).to(device_of(generator)), c,
                                   truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        image = render(generator, ws, transform, noise_mode)
        yield Rendered(seed=seed, image=to_uint8(image)[0], ws=ws[0].cpu().numpy())


def write_rendered(item: Rendered, outdir: Path, save_latents: bool) -> dict:
    image_path = save_image(item.image, outdir / f"seed{item.seed:04d}.png")
    record = {"seed": item.seed, "image": str(image_path)}
    if save_latents:
        record["latents"] = str(save_npy(item.ws.astype(np.float32), outdir / f"seed{item.seed:04d}.npy"))
    return record


def banner_for_test_model(network: str) -> str:
    return (f"{network} is a built-in random-weight TEST model: expect abstract patterns. Pass --network FILE.pkl "
            "or a registry name (e.g. stylegan3-r-ffhq-1024) for real images.")


# Settings that change no image: runs differing only in these add up in one folder.
SAME_IMAGES = ("outdir", "device", "kernels", "grid", "grid_max", "save_latents", "seeds")


def _earlier_images(outdir: Path, settings: GenerateSettings) -> list[dict]:
    """The image records of an earlier run into `outdir` (kept: runs of more seeds add up). Refused, before any
    work, when that run made its images with other settings: this one would write over them."""
    try:
        earlier = read_json(outdir / "generate.json")
        before = earlier["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    differ = settings_differences(before, settings.record(), SAME_IMAGES)
    if differ:
        raise SgtoolError(f"{outdir} holds images generated with other settings ({'; '.join(differ[:3])}); give "
                          "another --outdir, or delete the folder to start it over")
    images = earlier.get("images")
    return [r for r in images if isinstance(r, dict)] if isinstance(images, list) else []


def generate_images(settings: GenerateSettings, reporter: Reporter = SILENT, generator=None) -> dict:
    """Render every seed of `settings.seeds` into `settings.outdir`; returns the generate.json summary.

    Writes seedNNNN.png (and seedNNNN.npy with save_latents), grid.png of the first `grid_max` images
    when there are several, and generate.json. `generator`: an already loaded network (else
    `settings.network` is loaded).
    """
    from ..device import resolve_device
    from ..models import load_generator

    earlier = _earlier_images(Path(settings.outdir), settings)
    if generator is None:
        if settings.network is None:
            raise SgtoolError("give --network: a generator checkpoint, a registry name (`sgtool models list`) or a "
                              "built-in test model (tiny-stylegan3-t, tiny-stylegan3-r, tiny-stylegan2)")
        generator = load_generator(settings.network, device=resolve_device(settings.device))
    ranges = seed_ranges(settings.seeds, limit=SEED_LIMIT)
    count = sum(len(r) for r in ranges)
    outdir = Path(settings.outdir)
    rendered = render_seeds(generator, itertools.chain.from_iterable(ranges), truncation_psi=settings.trunc,
                            truncation_cutoff=settings.trunc_cutoff, class_idx=settings.class_idx,
                            noise_mode=settings.noise_mode, rotate=settings.rotate, translate=settings.translate)
    test_model = bool(getattr(generator, "is_test_model", False))
    if test_model:
        reporter.warn(banner_for_test_model(settings.network))
    records, tiles = [], []
    reporter.start("rendering", count)
    try:
        for item in rendered:
            record = write_rendered(item, outdir, settings.save_latents)
            if len(records) < RECORD_LIMIT:
                records.append(record)
            if settings.grid and len(tiles) < settings.grid_max:
                tiles.append(item.image)
            reporter.advance(info=f"seed {item.seed}")
    finally:
        reporter.finish()
    seeds = {record["seed"] for record in records}
    records = [*[r for r in earlier if r.get("seed") not in seeds][:max(0, RECORD_LIMIT - len(records))], *records]
    summary = {"command": "generate", "network": settings.network, "outdir": str(outdir),
               "settings": settings.record(), "test_model": test_model, "count": count, "images": records,
               "images_listed": len(records), "naming": "seedNNNN.png (seed zero-padded to 4 digits)"}
    if len(tiles) > 1:
        grid = image_grid(np.stack(tiles), cols=min(GRID_COLUMNS, len(tiles)))
        summary["grid"] = str(save_image(grid, outdir / "grid.png"))
    write_json(summary, outdir / "generate.json")
    return summary
