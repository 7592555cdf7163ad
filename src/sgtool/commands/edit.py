"""`sgtool edit`: semantic edits of inverted latents, sweeps, SeFa discovery and boundary training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..pipelines.edit import EditPlan, plan_edit, random_weights_warning, run_edit
from ..settings import EditSettings
from ..utils.batch import parse_shard, shard_file_name
from .common import RichReporter, ShardOpt, finish_batch, progress_bars, resolve_checkpoints
from .options import Run, command


@command(EditSettings, "edit", after_load=resolve_checkpoints)
def edit(settings: EditSettings, run: Run,
         latents: Annotated[Optional[list[str]], typer.Argument(
             help="NAME_latent.npy files, stylegan3-editing latents.npy dicts, photos (edited whole) or quoted "
                  "globs; or the folder of an earlier photo run.",
             show_default=False)] = None,
         shard: ShardOpt = None):
    """Edit inverted latents or whole photos (InterFaceGAN directions, StyleSpace channels, StyleCLIP text
    edits), sweep strengths, mix styles, discover SeFa directions, build StyleCLIP directions or train a
    boundary."""
    plan = plan_edit(latents or [], settings, parse_shard(shard), run.given)
    banner = random_weights_warning(plan)
    if banner:
        run.say(f"[yellow]{banner}[/]")
    with progress_bars(run.json) as bars:
        summary = run_edit(plan, RichReporter(bars))
    finish_batch(run, summary, _message(plan, summary))


def _message(plan: EditPlan, summary: dict) -> str:
    out = Path(plan.settings.outdir)
    if plan.task == "boundary":
        return (f"held-out accuracy {_percent(summary['val_accuracy'])} ({2 * summary['val_per_class']} samples; "
                f"in-between samples {_percent(summary['remaining_accuracy'])}); wrote {summary['boundary']}")
    if plan.task == "clip-directions":
        if summary["status"] == "interrupted":
            return (f"stopped after {summary['channels_done']} of {summary['channels']} channels; run the same "
                    f"command again to resume from {summary['partial']}")
        done = "already built" if summary["status"] == "skipped" else "wrote"
        return (f"{done} {summary['delta_i_c']} and {summary['s_stats']}; use them with --text PROMPT "
                f"--directions {out}")
    if plan.task == "mix":
        return f"wrote {summary['outputs']['grid']} ({len(summary['rows'])} x {len(summary['cols'])} mixes)"
    if plan.task == "photo":
        counts = summary["counts"]
        return (f"edited {counts['ok']} photo(s) into {out}/ ({counts['failed']} failed; record in "
                f"{out / shard_file_name('edits.json', plan.shard)})")
    if plan.task == "sefa":
        return (f"wrote {len(summary['directions'])} SeFa directions to {out}/ (sefa_00.npy is the strongest; "
                f"preview {summary['preview']}); use one with --direction NAME=FILE")
    counts = summary["counts"]
    grid = f", grid {summary['grid']}" if summary["grid"] else ""
    return (f"edited {counts['ok']} latent file(s) into {out}/ ({counts['failed']} failed{grid}; record in "
            f"{out / shard_file_name('edits.json', plan.shard)})")


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
