"""`sgtool info`: what a checkpoint holds (kind, resolution, dims, config, parameters)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from ..models import describe_generator, load_generator
from .common import ConfigOpt, JsonOpt, KernelsOpt, SetOpt, console, emit_json, reports_errors, setup


@reports_errors
def info(
    checkpoint: Annotated[str, typer.Argument(help="Generator checkpoint (.pkl, .pt, .safetensors) or built-in name.")],
    arch: Annotated[Optional[str], typer.Option("--arch", help="Architecture preset for ambiguous state dicts.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    kernels: KernelsOpt = None,
    json_out: JsonOpt = False,
):
    """Describe a generator checkpoint."""
    ctx = setup("info", config, set_, json_out, kernels=kernels)
    generator = load_generator(checkpoint, device="cpu", arch=arch or ctx.config.get("arch"))
    facts = {"checkpoint": checkpoint, **describe_generator(generator)}
    if ctx.json:
        emit_json(facts)
        return
    table = Table(show_header=False, box=None)
    for key, value in facts.items():
        if key != "init_kwargs":
            table.add_row(f"[bold]{key}[/]", f"{value:,}" if key == "parameters" else str(value))
    console.print(table)
