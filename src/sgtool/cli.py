"""The `sgtool` command line: one Typer app, one thin module per subcommand."""

from __future__ import annotations

import typer

from . import __version__
from .commands.generate import generate
from .commands.info import info

app = typer.Typer(
    name="sgtool",
    help="Invert and edit real photos and videos with StyleGAN3 and StyleGAN2.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("generate")(generate)
app.command("info")(info)


def _version(value: bool):
    if value:
        typer.echo(f"sgtool {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """Invert and edit real photos and videos with StyleGAN3 and StyleGAN2."""


def main() -> None:
    app()
