"""`sgtool info`: what a checkpoint holds (kind, resolution, dims, config, parameters); without a
checkpoint, `sgtool info --kernels auto|ref|jit` reports the compiled kernels built, vetted and
used on this machine under that backend."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from ..errors import SgtoolError
from ..hub import resolve_reference
from ..settings import InfoSettings
from .common import reporting, resolve_checkpoints
from .options import Run, command


@command(InfoSettings, "info", after_load=resolve_checkpoints)
def info(settings: InfoSettings, run: Run,
         checkpoint: Annotated[Optional[str], typer.Argument(
             help="Generator checkpoint (.pkl, .pt, .safetensors), registry name or built-in name.")] = None):
    """Describe a generator checkpoint, or (no checkpoint, --kernels B) the op kernels on this machine."""
    from ..pipelines.info import describe_checkpoint, kernel_report

    if checkpoint is None:
        if "kernels" not in run.given:
            raise SgtoolError("sgtool info: give a checkpoint to describe, or --kernels auto|ref|jit for the "
                              "kernel report")
        with reporting(run.json) as reporter:
            rows = kernel_report(reporter)
        run.show({"kernels": rows}, _kernel_table(rows))
        return
    facts = {**describe_checkpoint(resolve_reference(checkpoint, kind="generator"), settings),
             "checkpoint": checkpoint}
    run.show(facts, _facts_table(facts))


def _facts_table(facts: dict) -> Table:
    table = Table(show_header=False, box=None)
    for key, value in facts.items():
        if key != "init_kwargs":
            table.add_row(f"[bold]{key}[/]", f"{value:,}" if key == "parameters" else str(value))
    return table


def _kernel_table(rows: list[dict]) -> Table:
    table = Table(title="sgtool kernels", box=None)
    for column in ("device", "built", "parity check", "uses", "cache", "problem"):
        table.add_column(column)
    for row in rows:
        check = "passed" if row.get("parity_passed") else ("failed" if row.get("checked") else "not run")
        table.add_row(row["device"], "yes" if row["built"] else "no", check, f"{row['uses']} ({row['backend']})",
                      row["cache_dir"], row.get("error") or row.get("missing_tools") or "")
    return table
