"""`sgtool align`: FFHQ-aligned and unaligned face crops plus the landmarks transform between them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..settings import AlignSettings
from .common import ShardOpt, finish_batch, reporting, resolve_checkpoints
from .options import Run, command


@command(AlignSettings, "align", after_load=resolve_checkpoints)
def align(settings: AlignSettings, run: Run,
          paths: Annotated[list[str], typer.Argument(help="Image files, folders or globs (quote globs).")],
          shard: ShardOpt = None):
    """Find every face; write NAME_faceK_aligned.png, NAME_faceK_crop.png and alignment.json.

    Exit code 1 when some input had no face or could not be read (the others are still written).
    """
    from ..pipelines.align.run import SUMMARY_FILE, align_batch
    from ..utils.batch import parse_shard, shard_file_name

    shard_spec = parse_shard(shard)
    with reporting(run.json) as reporter:
        summary = align_batch(paths, settings, shard=shard_spec, reporter=reporter)
    counts = summary["counts"]
    out = Path(settings.outdir)
    message = (f"aligned {len(summary['faces'])} face(s) from {counts['ok'] + counts['skipped']} of "
               f"{len(summary['items'])} image(s){f' (shard {shard_spec})' if shard_spec else ''} into {out}/ "
               f"({counts['skipped']} kept from an earlier run; records in "
               f"{out / shard_file_name(SUMMARY_FILE, shard_spec)})")
    if summary.get("transforms"):
        message += f"; landmarks transforms in {summary['transforms']}"
    finish_batch(run, summary, message)
