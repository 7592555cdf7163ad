"""`sgtool expand-fov`: render beyond the original frame with StyleGAN3's input translation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..settings import ExpandFovSettings
from .common import ShardOpt, finish_batch, record_file, reporting, resolve_checkpoints
from .options import Run, command


@command(ExpandFovSettings, "expand-fov", after_load=resolve_checkpoints)
def expand_fov(settings: ExpandFovSettings, run: Run,
               inputs: Annotated[list[str], typer.Argument(help="NAME_latent.npy files or latents.npy dicts, photos "
                                                                "(inverted first) or one video.")],
               shard: ShardOpt = None):
    """Render a StyleGAN3 latent, an inverted photo or a clip's every frame on a wider canvas, edits optional."""
    from ..pipelines.fov.run import run_expand_fov
    from ..utils.batch import parse_shard

    with reporting(run.json) as reporter:
        summary = run_expand_fov(inputs, settings, shard=parse_shard(shard), reporter=reporter)
    out = Path(settings.outdir)
    if "video" in summary:
        width, height = summary["size"]
        run.report(summary, f"wrote {summary['video']} ({summary['frames']} frames, {width}x{height}; record in "
                            f"{out / 'expand_fov_video.json'})")
        return
    for item in summary["items"]:
        for entry in item.get("entries", []):
            run.say(f"{entry['name']}: {entry['image']} ({entry['size'][0]}x{entry['size'][1]})")
    counts = summary["counts"]
    finish_batch(run, summary, f"expanded {counts['ok']} input(s) into {out}/ ({counts['failed']} failed; record "
                               f"in {record_file(summary, 'expand_fov.json')})")
