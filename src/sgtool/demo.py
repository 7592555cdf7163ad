"""`make demo`: the main job on a default that works offline.

Renders a grid of samples and a rotation/translation sweep. With a real checkpoint in
$SGTOOL_DEMO_NETWORK it uses that; otherwise the built-in random-weight test generator, and says so.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.panel import Panel

from .models import load_generator
from .pipelines.generate import render_seeds
from .utils.io import image_grid, save_image, write_json

DEFAULT_NETWORK = "tiny-stylegan3-t"


def run_demo(outdir: Path, network: str = DEFAULT_NETWORK, console: Console | None = None) -> dict:
    console = console or Console(stderr=True)
    generator = load_generator(network)
    if getattr(generator, "is_test_model", False):
        console.print(Panel(
            f"Using [bold]{network}[/], a built-in TEST model with random weights: the pictures are abstract "
            "patterns, not faces.\nFor real images point the demo at a checkpoint, e.g.\n"
            "  SGTOOL_DEMO_NETWORK=stylegan3-r-ffhq-1024x1024.pkl make demo\n"
            "or run: sgtool generate --network stylegan3-r-ffhq-1024x1024.pkl --seeds 0-7",
            title="sgtool demo", border_style="yellow"))
    outdir.mkdir(parents=True, exist_ok=True)
    samples = render_seeds(generator, range(16), truncation_psi=0.7)
    outputs = {"samples": str(save_image(image_grid(np.stack([s.image for s in samples]), 8),
                                         outdir / "samples_grid.png"))}
    if generator.kind == "stylegan3":
        # One seed rotated (top row) and translated (bottom row) through the input transform.
        angles = np.linspace(-45, 45, 7)
        shifts = np.linspace(-0.3, 0.3, 7)
        rotated = [render_seeds(generator, [0], 0.7, rotate=float(a))[0].image for a in angles]
        shifted = [render_seeds(generator, [0], 0.7, translate=(float(t), 0.0))[0].image for t in shifts]
        sweep = image_grid(np.stack(rotated + shifted), 7)
        outputs["sweep"] = str(save_image(sweep, outdir / "rotate_translate_sweep.png"))
    record = {"network": network, "test_model": bool(getattr(generator, "is_test_model", False)),
              "seeds": list(range(16)), "truncation_psi": 0.7, "outputs": outputs}
    write_json(record, outdir / "demo.json")
    for name, path in outputs.items():
        console.print(f"{name}: {path}")
    return record


if __name__ == "__main__":
    run_demo(Path(sys.argv[1] if len(sys.argv) > 1 else "demo_out"),
             os.environ.get("SGTOOL_DEMO_NETWORK", DEFAULT_NETWORK))
