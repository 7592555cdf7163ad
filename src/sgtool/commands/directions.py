"""`sgtool directions sefa | boundary | styleclip`: find or build the directions `sgtool edit` applies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import SgtoolError
from ..settings import BoundarySettings, SefaSettings, StyleclipDirectionsSettings
from .common import finish_batch, reporting, resolve_checkpoints
from .options import Run, command

directions_app = typer.Typer(
    name="directions",
    help="Find or build edit directions: SeFa (no labels), InterFaceGAN boundaries (from scores), StyleCLIP's files "
         "(for text edits).",
    no_args_is_help=True,
    add_completion=False,
)


def _require_network(settings):
    if settings.network is None:
        raise SgtoolError("give --network: the generator to find the directions for")
    return resolve_checkpoints(settings)


@directions_app.command("sefa")
@command(SefaSettings, "directions sefa", after_load=_require_network)
def sefa(settings: SefaSettings, run: Run,
         latents: Annotated[Optional[list[str]], typer.Argument(
             help="A latent file whose code the preview edits (none: a seed's, `preview_seed`).",
             show_default=False)] = None):
    """Directions without labels, from the generator's style weights (SeFa, strongest first)."""
    from ..models import builtin_model_warning

    from ..pipelines.directions.sefa import run_sefa
    from ..pipelines.shared.batch import LATENT_SUFFIXES, collect

    files = collect(latents, LATENT_SUFFIXES, "latent") if latents else []
    run.warn(builtin_model_warning(settings.network, "the directions found"))
    summary = run_sefa(settings, files)
    out = Path(settings.outdir)
    layers = f" --layers {','.join(map(str, settings.layers))}" if settings.layers is not None else ""
    finish_batch(run, summary, f"wrote {len(summary['directions'])} SeFa directions to {out}/ (sefa_00.npy is the "
                               f"strongest; preview {summary['preview']}); apply one with `sgtool edit LATENTS -n "
                               f"{settings.network} --direction sefa0={out / 'sefa_00.npy'} --edit sefa0=3{layers}`")


@directions_app.command("boundary")
@command(BoundarySettings, "directions boundary", after_load=resolve_checkpoints)
def boundary(settings: BoundarySettings, run: Run,
             scores: Annotated[Path, typer.Argument(help="CSV of latent,score rows: each latent file (.npy) and "
                                                         "its attribute score.", show_default=False)]):
    """An InterFaceGAN boundary: a linear SVM separating the highest from the lowest scored latents."""
    from ..pipelines.directions.boundary import run_boundary

    summary = run_boundary(scores, settings)
    name = summary["name"]
    finish_batch(run, summary, f"held-out accuracy {_percent(summary['val_accuracy'])} "
                               f"({2 * summary['val_per_class']} samples; in-between samples "
                               f"{_percent(summary['remaining_accuracy'])}); wrote {summary['boundary']}; apply it "
                               f"with `sgtool edit LATENTS -n G --direction {name}={summary['boundary']} "
                               f"--edit {name}=2`")


@directions_app.command("styleclip")
@command(StyleclipDirectionsSettings, "directions styleclip", after_load=_require_network)
def styleclip(settings: StyleclipDirectionsSettings, run: Run):
    """StyleCLIP's global-direction files for any generator, for text edits (resumable, official layouts).

    S statistics and each S channel's CLIP image direction, as stylegan3-editing and StyleCLIP build them.
    """
    from ..models import builtin_model_warning

    from ..pipelines.directions.styleclip import run_styleclip

    run.warn(builtin_model_warning(settings.network, "the directions built"))
    with reporting(run.json) as reporter:
        summary = run_styleclip(settings, reporter)
    out = Path(settings.outdir)
    if summary["status"] == "interrupted":
        message = (f"stopped after {summary['channels_done']} of {summary['channels']} channels; run the same "
                   f"command again to resume from {summary['partial']}")
    else:
        done = "already built" if summary["status"] == "skipped" else "wrote"
        message = (f"{done} {summary['delta_i_c']} and {summary['s_stats']}; use them with `sgtool edit LATENTS -n "
                   f"{settings.network} --text PROMPT --directions {out}`")
    finish_batch(run, summary, message)


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
