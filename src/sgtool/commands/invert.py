"""`sgtool invert`: photos -> W+ latents with a ReStyle encoder, optimisation, or both."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..settings import InvertSettings
from .common import ShardOpt, finish_batch, record_file, reporting, resolve_checkpoints, results
from .options import Run, command


@command(InvertSettings, "invert", after_load=resolve_checkpoints)
def invert(settings: InvertSettings, run: Run,
           paths: Annotated[list[str], typer.Argument(help="Image files, folders or globs (quote globs).")],
           shard: ShardOpt = None):
    """Invert photos into W+ latents (an encoder, projection, or hybrid; a feature-space encoder adds its F)."""
    from ..pipelines.invert.run import invert_batch
    from ..utils.batch import parse_shard

    with reporting(run.json) as reporter:
        summary = invert_batch(paths, settings, shard=parse_shard(shard), reporter=reporter)
    if settings.metrics and summary["metrics"] and not run.json:
        results.print(_metrics_table(summary))
    counts = summary["counts"]
    out = Path(settings.outdir)
    finish_batch(run, summary, f"inverted {counts['ok']} image(s) into {out}/ ({counts['skipped']} skipped, "
                               f"{counts['failed']} failed; record in {record_file(summary, 'invert.json')})")


def _metrics_table(summary: dict) -> Table:
    rows = [item for item in summary["items"] if item.get("metrics")]
    keys = [k for k in ("mse", "psnr", "lpips", "ms_ssim", "id_similarity", "seconds") if any(k in r["metrics"]
                                                                                              for r in rows)]
    table = Table(title="reconstruction metrics")
    table.add_column("image")
    for key in keys:
        table.add_column(key, justify="right")
    for item in rows:
        table.add_row(item["name"], *[f"{item['metrics'][k]:.4f}" if k in item["metrics"] else "-" for k in keys])
    mean = summary["metrics"]
    table.add_row("[bold]mean[/]", *[f"{mean[k]:.4f}" if k in mean else "-" for k in keys])
    return table
