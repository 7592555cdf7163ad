"""`sgtool generate`: render images (and optionally W+ latents) from seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.progress import Progress

from ..device import resolve_device
from ..errors import SgtoolError
from ..models import load_generator
from ..pipelines.generate import render_seeds, write_rendered
from ..utils.io import image_grid, save_image, write_json
from ..utils.parsing import parse_float_pair, parse_int_list
from .common import ConfigOpt, DeviceOpt, JsonOpt, KernelsOpt, SetOpt, console, emit_json, reports_errors, setup


@reports_errors
def generate(
    network: Annotated[Optional[str], typer.Option("--network", "-n", help="Checkpoint path or built-in model.")] = None,
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="Seeds, e.g. 0-7,12.")] = None,
    trunc: Annotated[Optional[float], typer.Option("--trunc", help="Truncation psi.")] = None,
    trunc_cutoff: Annotated[Optional[int], typer.Option("--trunc-cutoff", help="Truncate the first N ws.")] = None,
    class_idx: Annotated[Optional[int], typer.Option("--class", help="Class index (conditional networks).")] = None,
    noise_mode: Annotated[Optional[str], typer.Option("--noise-mode", help="const, random or none.")] = None,
    rotate: Annotated[Optional[float], typer.Option("--rotate", help="Rotate by DEG (StyleGAN3).")] = None,
    translate: Annotated[Optional[str], typer.Option("--translate", help="Translate by X,Y image widths (StyleGAN3).")] = None,
    outdir: Annotated[Optional[Path], typer.Option("--outdir", "-o", help="Output directory.")] = None,
    save_latents: Annotated[Optional[bool], typer.Option("--save-latents/--no-save-latents", help="Write W+ .npy per seed.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    kernels: KernelsOpt = None,
    json_out: JsonOpt = False,
):
    """Render images from seeds with a StyleGAN3 or StyleGAN2 generator."""
    ctx = setup("generate", config, set_, json_out, device, kernels)
    cfg = ctx.config
    ctx.override((("network", network), ("seeds", seeds), ("trunc", trunc), ("trunc_cutoff", trunc_cutoff),
                  ("class", class_idx), ("noise_mode", noise_mode), ("rotate", rotate),
                  ("translate", translate), ("outdir", outdir), ("save_latents", save_latents)))
    seed_list = parse_int_list(cfg["seeds"], "seed")
    shift = parse_float_pair(cfg["translate"], "--translate")
    if cfg["noise_mode"] not in ("const", "random", "none"):
        raise SgtoolError(f"--noise-mode must be const, random or none, got {cfg['noise_mode']!r}")
    torch_device = resolve_device(cfg["device"])
    generator = load_generator(cfg["network"], device=torch_device)
    if getattr(generator, "is_test_model", False):
        console.print(f"[yellow]{cfg['network']} is a built-in random-weight TEST model: expect abstract patterns. "
                      "Pass --network FILE.pkl (e.g. NVIDIA's stylegan3-r-ffhq-1024x1024.pkl) for real images.[/]")
    out = Path(cfg["outdir"])
    records = []
    with Progress(console=console, transient=True, disable=ctx.json) as progress:
        task = progress.add_task("rendering", total=len(seed_list))

        def save(item):
            records.append(write_rendered(item, out, bool(cfg["save_latents"])))
            progress.advance(task)

        rendered = render_seeds(generator, seed_list, truncation_psi=float(cfg["trunc"]),
                                truncation_cutoff=cfg["trunc_cutoff"], class_idx=cfg["class"],
                                noise_mode=cfg["noise_mode"], rotate=float(cfg["rotate"]), translate=shift,
                                on_image=save)
    summary = {"network": str(cfg["network"]), "config": {**cfg, "outdir": str(out)}, "images": records}
    if cfg.get("grid") and len(rendered) > 1:
        grid = image_grid(np.stack([r.image for r in rendered]), cols=min(8, len(rendered)))
        summary["grid"] = str(save_image(grid, out / "grid.png"))
    write_json(summary, out / "generate.json")
    if ctx.json:
        emit_json(summary)
    else:
        console.print(f"wrote {len(records)} image(s) to {out}/ (settings in {out / 'generate.json'})")
