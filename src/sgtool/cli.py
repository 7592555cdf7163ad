"""The `sgtool` command line: one Typer app, one thin module per subcommand."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import typer
from typer.core import TyperGroup

from . import __version__
from .commands.align import align
from .commands.common import console
from .commands.config import config_app
from .commands.convert import convert
from .commands.directions import directions_app
from .commands.edit import edit, moved_task
from .commands.expand_fov import expand_fov
from .commands.generate import generate
from .commands.info import info
from .commands.invert import invert
from .commands.merge_manifests import merge_manifests
from .commands.mix import mix
from .commands.models import models_app
from .commands.train_encoder import train_encoder
from .commands.translate import translate
from .commands.tune import tune
from .commands.video import video


class _Commands(TyperGroup):
    """sgtool's commands in workflow order, with the old `edit` spellings of tasks that moved to commands of their
    own sent on to them."""

    def list_commands(self, ctx) -> list[str]:
        return [name for name, _, _ in COMMANDS]

    def resolve_command(self, ctx, args):
        if args and args[0] == "edit":
            moved = moved_task(args[1:])
            if moved is not None:
                args, pointer = moved
                console.print(f"[yellow]{pointer}[/]", highlight=False, soft_wrap=True)
        return super().resolve_command(ctx, args)


app = typer.Typer(
    cls=_Commands,
    name="sgtool",
    help="Invert and edit real photos and videos with StyleGAN3 and StyleGAN2.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# In the order of the workflow: align -> invert -> tune -> edit -> video / expand-fov, then the tools.
WORKFLOW, TOOLS = "Workflow", "Models and tools"
COMMANDS = [
    ("align", align, WORKFLOW), ("invert", invert, WORKFLOW), ("translate", translate, WORKFLOW),
    ("tune", tune, WORKFLOW), ("edit", edit, WORKFLOW),
    ("mix", mix, WORKFLOW), ("directions", directions_app, WORKFLOW), ("video", video, WORKFLOW),
    ("expand-fov", expand_fov, WORKFLOW), ("train-encoder", train_encoder, WORKFLOW),
    ("generate", generate, TOOLS), ("info", info, TOOLS), ("convert", convert, TOOLS), ("models", models_app, TOOLS),
    ("merge-manifests", merge_manifests, TOOLS), ("config", config_app, TOOLS),
]
for name, target, panel in COMMANDS:
    if isinstance(target, typer.Typer):
        app.add_typer(target, name=name, rich_help_panel=panel)
    else:
        app.command(name, rich_help_panel=panel)(target)


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
