"""`sgtool config show COMMAND`: the settings a command would run with, and where each value comes from."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import SgtoolError
from ..settings import COMMAND_SETTINGS
from ..settings.base import explain_settings
from .common import reports_errors
from .options import ConfigOption, JsonOption, Run, SetOption

config_app = typer.Typer(
    name="config",
    help="Show every setting of a command with its value and where it came from (default, --config, --set).",
    no_args_is_help=True,
    add_completion=False,
)


@config_app.command("show")
@reports_errors
def show(command: Annotated[list[str], typer.Argument(help="The command, e.g. edit or directions sefa.",
                                                      show_default=False)],
         config: ConfigOption = None, set_: SetOption = None, json_out: JsonOption = False):
    """Print every setting COMMAND would run with (before its own options), its value and its source."""
    name = " ".join(command)
    model = COMMAND_SETTINGS.get(name)
    if model is None:
        raise SgtoolError(f"`sgtool {name}` has no settings; one of: {', '.join(COMMAND_SETTINGS)}")
    rows = explain_settings(model, name, config, set_ or ())
    table = Table(title=f"sgtool {name}", title_justify="left")
    for column in ("setting", "value", "from"):
        table.add_column(column, overflow="fold")
    for key, value, source in rows:
        table.add_row(key, escape(str(value)), escape(source))
    Run(json=json_out).show({"command": name, "settings": [{"key": k, "value": v, "source": s} for k, v, s in rows]},
                            table)
