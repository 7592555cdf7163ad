"""`sgtool convert`: move a generator between NVIDIA pickle, rosinality .pt and sgtool safetensors layouts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..hub import resolve_reference
from ..settings import ConvertSettings
from .common import resolve_checkpoints
from .options import Run, command


@command(ConvertSettings, "convert", after_load=resolve_checkpoints)
def convert(settings: ConvertSettings, run: Run,
            source: Annotated[str, typer.Argument(help="Generator: NVIDIA .pkl, rosinality/NVIDIA .pt, .safetensors, "
                                                       "an e4e/pSp/HyperStyle checkpoint (its decoder), a registry "
                                                       "name or a built-in name.")],
            output: Annotated[Path, typer.Argument(help="File to write.")]):
    """Convert a generator checkpoint to another layout (pkl <-> rosinality pt <-> sgtool)."""
    from ..pipelines.convert import convert_checkpoint
    from ..utils.io import check_writable

    check_writable(output, "file", "OUTPUT")
    report, summary = convert_checkpoint(resolve_reference(source), output, settings)
    for note in report.notes:
        run.say(f"[yellow]note:[/] {escape(note)}", markup=True)
    check = "" if report.max_abs_diff is None else f"; reloaded render differs by at most {report.max_abs_diff:.2e}"
    run.report(summary, f"wrote {report.output} ({report.to}, {report.kind} {report.resolution}px from "
                        f"{report.source_layout or 'built-in'}){check}")
