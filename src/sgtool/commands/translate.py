"""`sgtool translate`: pSp's image-to-image tasks (sketch / segmentation to face, super-resolution, frontalisation,
toonify)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..settings import TranslateSettings
from .common import ShardOpt, finish_batch, record_file, reporting, resolve_checkpoints
from .options import Run, command


@command(TranslateSettings, "translate", after_load=resolve_checkpoints)
def translate(settings: TranslateSettings, run: Run,
              paths: Annotated[list[str], typer.Argument(help="Image files, folders or globs (quote globs).")],
              shard: ShardOpt = None):
    """Translate sketches, face-parsing maps, low-resolution or aligned photos into faces with a pSp task checkpoint.

    The input kind comes from the checkpoint; --outputs N adds N variants by pSp's style mixing.
    """
    from ..pipelines.translate.run import translate_batch
    from ..utils.batch import parse_shard

    with reporting(run.json) as reporter:
        summary = translate_batch(paths, settings, shard=parse_shard(shard), reporter=reporter)
    counts = summary["counts"]
    finish_batch(run, summary, f"translated {counts['ok']} input(s) into {settings.outdir}/ ({counts['failed']} "
                               f"failed; record in {record_file(summary, 'translate.json')})")
