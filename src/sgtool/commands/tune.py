"""`sgtool tune`: Pivotal Tuning Inversion, saving a tuned generator every command can load."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..settings import TuneSettings
from .common import ShardOpt, finish_batch, record_file, reporting, resolve_checkpoints
from .options import Run, command


@command(TuneSettings, "tune", after_load=resolve_checkpoints)
def tune(settings: TuneSettings, run: Run,
         inputs: Annotated[Path, typer.Argument(help="An image, or a folder of images (frames) to tune on.")],
         shard: ShardOpt = None):
    """Pivotal Tuning Inversion: tune the generator so the pivot latents reproduce the photos exactly.

    Without --latents each image is first projected into W with PTI's schedule (450 steps, lr 0.01, LPIPS only).
    NVIDIA's projector schedule instead: --set invert.projector.recipe=nvidia.
    """
    from ..pipelines.tune.run import tune_paths
    from ..utils.batch import parse_shard

    with reporting(run.json) as reporter:
        summary = tune_paths(inputs, settings, shard=parse_shard(shard), reporter=reporter)
    if "items" in summary:  # a folder tuned image by image
        counts = summary["counts"]
        message = (f"tuned {counts['ok']} image(s) into {settings.outdir}/<name>/ ({counts['failed']} failed, "
                   f"{counts['not_run']} not run; record in {record_file(summary, 'tune.json')})")
        if summary["exit_code"] == 130:
            message += "; interrupted: run the same command again to resume"
    elif summary["status"] == "interrupted":
        message = (f"interrupted after step {summary['steps_done']}; checkpoint {summary['checkpoint']}: run the same "
                   "command again to resume")
    else:
        before, after = summary["mean_before"], summary["mean_after"]
        message = (f"{summary['outdir']}: {summary['steps_done']} steps, LPIPS {before['lpips']:.4f} -> "
                   f"{after['lpips']:.4f}, MSE {before['mse']:.5f} -> {after['mse']:.5f}; generator "
                   f"{summary['outputs']['generator']}")
    finish_batch(run, summary, message)
