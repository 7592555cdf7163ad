"""`sgtool generate`: render images (and optionally W+ latents) from seeds."""

from __future__ import annotations

from pathlib import Path

from ..settings import GenerateSettings
from .common import reporting, resolve_checkpoints
from .options import Run, command


@command(GenerateSettings, "generate", after_load=resolve_checkpoints)
def generate(settings: GenerateSettings, run: Run):
    """Render images from seeds with a StyleGAN3 or StyleGAN2 generator."""
    from ..pipelines.generate import generate_images

    with reporting(run.json) as reporter:
        summary = generate_images(settings, reporter=reporter)
    out = Path(settings.outdir)
    run.report(summary, f"wrote {len(summary['images'])} image(s) to {out}/ (settings in {out / 'generate.json'})")
