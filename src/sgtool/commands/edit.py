"""`sgtool edit`: apply edits (InterFaceGAN directions, StyleSpace channels, StyleCLIP text) to latents or photos."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..settings import EditSettings
from .common import ShardOpt, finish_batch, record_file, reporting, resolve_checkpoints
from .options import Run, command

if TYPE_CHECKING:
    from ..pipelines.edit.run import EditPlan


@command(EditSettings, "edit", after_load=resolve_checkpoints)
def edit(settings: EditSettings, run: Run,
         latents: Annotated[Optional[list[str]], typer.Argument(
             help="NAME_latent.npy files, stylegan3-editing latents.npy dicts, photos (edited whole) or quoted "
                  "globs; or the folder of an earlier photo run.",
             show_default=False)] = None,
         shard: ShardOpt = None):
    """Apply edits to latents or whole photos: InterFaceGAN directions, StyleSpace channels, StyleCLIP text.

    Sweeps of strengths make grids and animations. Mixing styles: `sgtool mix`. New directions: `sgtool directions`.
    """
    from ..pipelines.edit.run import plan_edit, random_weights_warning, run_edit
    from ..utils.batch import parse_shard

    plan = plan_edit(latents or [], settings, parse_shard(shard), run.given)
    run.warn(random_weights_warning(plan))
    with reporting(run.json) as reporter:
        summary = run_edit(plan, reporter)
    finish_batch(run, summary, _message(plan, summary))


def _message(plan: EditPlan, summary: dict) -> str:
    out = Path(plan.settings.outdir)
    if plan.task == "crossover":
        return f"crossover of {summary['a']} and {summary['b']}: {summary['latent']} and {summary['image']}"
    counts, record = summary["counts"], record_file(summary, "edits.json")
    if plan.task == "photo":
        return f"edited {counts['ok']} photo(s) into {out}/ ({counts['failed']} failed; record in {record})"
    grid = f", grid {summary['grid']}" if summary["grid"] else ""
    return f"edited {counts['ok']} latent file(s) into {out}/ ({counts['failed']} failed{grid}; record in {record})"


# Tasks `sgtool edit` used to do, now commands of their own: flag -> (new command words, takes a value, the value
# becomes an argument, edit options the new command lacks and ignored before). Kept for one release.
MOVED_TASKS = {
    "--mix": (("mix",), False, False, ()),
    "--discover": (("directions", "sefa"), True, False, ()),
    "--train-boundary": (("directions", "boundary"), True, True, ("--device", "--kernels")),
    "--build-clip-directions": (("directions", "styleclip"), False, False, ()),
}


def moved_task(args: list[str]) -> tuple[list[str], str] | None:
    """`edit` arguments that spell a moved task -> (the new command's arguments, the pointer line); None when
    they do not."""
    for position, arg in enumerate(args):
        flag, _, inline = arg.partition("=")
        if flag not in MOVED_TASKS:
            continue
        words, takes_value, value_is_argument, dropped = MOVED_TASKS[flag]
        rest = args[:position] + args[position + 1:]
        value = inline
        if takes_value and not inline and position < len(args) - 1:
            value = rest.pop(position)
        if value_is_argument:
            rest = [value, *rest]
        rest = _without_options(rest, dropped)
        new = " ".join(words)
        return [*words, *rest], (f"`sgtool edit {flag}` is now `sgtool {new}` (the old spelling goes in the next "
                                 "release)")
    return None


def _without_options(args: list[str], options: tuple[str, ...]) -> list[str]:
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in options:
            skip = True
        elif arg.partition("=")[0] not in options:
            kept.append(arg)
    return kept
