"""`sgtool mix`: NVIDIA's style-mixing figure from latent files or seeds."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..settings import MixSettings
from .common import finish_batch, reporting, resolve_checkpoints
from .options import Run, command


@command(MixSettings, "mix", after_load=resolve_checkpoints)
def mix(settings: MixSettings, run: Run,
        latents: Annotated[Optional[list[str]], typer.Argument(
            help="Latent files (A B: B's --layers over A; more: every pair), or none with --rows and --cols seeds.",
            show_default=False)] = None):
    """Style mixing: the --layers style inputs of the column codes over the row codes (NVIDIA's figure)."""
    from ..models import builtin_model_warning
    from ..pipelines.mix import plan_mix, run_mix

    plan = plan_mix(latents or [], settings)
    run.warn(builtin_model_warning(settings.network, "the mixes"))
    with reporting(run.json) as reporter:
        summary = run_mix(plan, reporter)
    outputs = summary["outputs"]
    single = f", {outputs['latent']} (edit it like any latent)" if "latent" in outputs else ""
    finish_batch(run, summary, f"wrote {outputs['grid']} ({len(summary['rows'])} x {len(summary['cols'])} "
                               f"mixes){single}")
