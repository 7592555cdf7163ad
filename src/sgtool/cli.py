"""The `sgtool` command line: one Typer app, one thin module per subcommand."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import typer

from . import __version__
from .commands.align import align
from .commands.convert import convert
from .commands.edit import edit
from .commands.expand_fov import expand_fov
from .commands.generate import generate
from .commands.info import info
from .commands.invert import invert
from .commands.merge_manifests import merge_manifests
from .commands.models import models_app
from .commands.train_encoder import train_encoder
from .commands.tune import tune
from .commands.video import video

app = typer.Typer(
    name="sgtool",
    help="Invert and edit real photos and videos with StyleGAN3 and StyleGAN2.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# Listed in the order of the workflow: align -> invert -> tune -> edit -> video / expand-fov.
app.command("generate")(generate)
app.command("info")(info)
app.command("align")(align)
app.command("invert")(invert)
app.command("tune")(tune)
app.command("edit")(edit)
app.command("video")(video)
app.command("expand-fov")(expand_fov)
app.command("train-encoder")(train_encoder)
app.command("convert")(convert)
app.add_typer(models_app, name="models")
app.command("merge-manifests")(merge_manifests)


def _version(value: bool):
    if value:
        typer.echo(f"sgtool {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit."),
          offline: bool = typer.Option(False, "--offline", help="Never download: registry names must already "
                                       "be in the cache (same as SGTOOL_OFFLINE=1).")):
    """Invert and edit real photos and videos with StyleGAN3 and StyleGAN2."""
    if offline:
        os.environ["SGTOOL_OFFLINE"] = "1"


def _one_line_warnings() -> None:
    """sgtool's own warnings (a fallback taken, a setting ignored) as one line each, without source excerpts."""
    package = str(Path(__file__).resolve().parent)
    default = warnings.formatwarning

    def formatted(message, category, filename, lineno, line=None):
        if str(Path(filename).resolve()).startswith(package):
            return f"{message}\n"  # each names its source ("sgtool kernels: ...", "sgtool: projector.precision ...")
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = formatted


def main() -> None:
    _one_line_warnings()
    app()
