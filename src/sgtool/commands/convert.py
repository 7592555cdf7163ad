"""`sgtool convert`: move a generator between NVIDIA pickle, rosinality .pt and sgtool safetensors layouts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..device import resolve_device
from ..utils.io import write_json
from .common import ConfigOpt, DeviceOpt, JsonOpt, KernelsOpt, SetOpt, console, emit_json, reports_errors, setup


@reports_errors
def convert(
    source: Annotated[str, typer.Argument(help="Generator: NVIDIA .pkl, rosinality/NVIDIA .pt, .safetensors, "
                                               "an e4e/pSp/HyperStyle checkpoint (its decoder) or a built-in name.")],
    output: Annotated[Path, typer.Argument(help="File to write.")],
    to: Annotated[Optional[str], typer.Option("--to", help="nvidia-pkl, rosinality or sgtool "
                                                            "(default: from OUTPUT's extension).")] = None,
    verify: Annotated[Optional[bool], typer.Option("--verify/--no-verify", help="Reload the written file and "
                                                   "compare a render with the source's.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    kernels: KernelsOpt = None,
    json_out: JsonOpt = False,
):
    """Convert a generator checkpoint to another layout (pkl <-> rosinality pt <-> sgtool)."""
    from ..pipelines.convert import convert_generator

    ctx = setup("convert", config, set_, json_out, device, kernels)
    cfg = ctx.config
    ctx.override((("to", to), ("verify", verify)))
    report = convert_generator(source, output, to=cfg.get("to"), device=resolve_device(cfg["device"]),
                               verify=bool(cfg["verify"]))
    summary = {**report.as_dict(), "config": {k: v for k, v in cfg.items()}}
    write_json(summary, output.with_name(output.name + ".json"))
    if ctx.json:
        emit_json(summary)
        return
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    check = "" if report.max_abs_diff is None else f"; reloaded render differs by at most {report.max_abs_diff:.2e}"
    console.print(f"wrote {report.output} ({report.to}, {report.kind} {report.resolution}px from "
                  f"{report.source_layout or 'built-in'}){check}", highlight=False)
