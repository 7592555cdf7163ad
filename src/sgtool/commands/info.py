"""`sgtool info`: what a checkpoint holds (kind, resolution, dims, config, parameters); without a
checkpoint, `sgtool info --kernels auto|ref|jit` reports the compiled kernels built, vetted and
used on this machine under that backend."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from ..models import describe_generator, load_generator
from ..errors import SgtoolError
from ..device import resolve_device
from .common import ConfigOpt, DeviceOpt, JsonOpt, SetOpt, console, emit_json, reports_errors, setup

KernelsOrReportOpt = Annotated[Optional[str], typer.Option(
    "--kernels", help="Op backend: auto, ref or jit. Without a checkpoint: report the compiled kernels "
                      "built and used on this machine with that backend.")]


@reports_errors
def info(
    checkpoint: Annotated[Optional[str], typer.Argument(
        help="Generator checkpoint (.pkl, .pt, .safetensors) or built-in name.")] = None,
    arch: Annotated[Optional[str], typer.Option("--arch", help="Architecture preset for ambiguous state dicts.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    kernels: KernelsOrReportOpt = None,
    device: DeviceOpt = None,
    json_out: JsonOpt = False,
):
    """Describe a generator checkpoint, or (no checkpoint, --kernels B) the op kernels on this machine."""
    ctx = setup("info", config, set_, json_out, device=device, kernels=kernels)
    if checkpoint is None:
        if kernels is None:
            raise SgtoolError("sgtool info: give a checkpoint to describe, or --kernels auto|ref|jit for the "
                              "kernel report")
        _report_kernels(ctx.json)
        return
    generator = load_generator(checkpoint, device=resolve_device(ctx.config["device"]),
                               arch=arch or ctx.config.get("arch"))
    facts = {"checkpoint": checkpoint, **describe_generator(generator)}
    if ctx.json:
        emit_json(facts)
        return
    table = Table(show_header=False, box=None)
    for key, value in facts.items():
        if key != "init_kwargs":
            table.add_row(f"[bold]{key}[/]", f"{value:,}" if key == "parameters" else str(value))
    console.print(table)


def _report_kernels(as_json: bool) -> None:
    import torch

    from .. import kernels as kernel_ops
    from ..kernels import jit

    devices = [torch.device("cpu")] + [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    with console.status("building and checking the kernels (first use takes a minute)", spinner="dots"):
        rows = [jit.describe(device, build=True) for device in devices]
    backend = kernel_ops.current_backend()
    for row in rows:
        row["backend"] = backend
        row["uses"] = "jit" if backend != "ref" and row.get("usable") else "ref"
    if as_json:
        emit_json({"kernels": rows})
        return
    table = Table(title="sgtool kernels", box=None)
    for column in ("device", "built", "parity check", "uses", "cache", "problem"):
        table.add_column(column)
    for row in rows:
        check = "passed" if row.get("parity_passed") else ("failed" if row.get("checked") else "not run")
        table.add_row(row["device"], "yes" if row["built"] else "no", check, f"{row['uses']} ({backend})",
                      row["cache_dir"], row.get("error") or row.get("missing_tools") or "")
    console.print(table)
