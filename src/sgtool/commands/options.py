"""The one adapter from settings models to Typer options.

A command is written as `def invert(settings: InvertSettings, run: Run, paths: ...)`; the
decorator `command(InvertSettings, "invert")` adds one option per `Cli` field of the model (and per
entry of its `cli_nested`), plus --config, --set and --json, and calls the function with the
validated settings. The options' help, choices and defaults come from the fields, so a setting is
declared only in its model.
"""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.markup import escape

from ..settings.base import (Cli, Settings, choices_of, key_of, load_settings, metadata_of, nest, ordered_fields,
                             read_config_file, section_model, unwrap_optional)
from .common import console, emit_json, reports_errors, results

_METAVARS = {int: "INT", float: "NUMBER", str: "TEXT", Path: "PATH"}


@dataclass
class Run:
    """What a command body needs besides its settings."""

    json: bool
    given: frozenset[str] = frozenset()  # dotted keys of the settings given as command-line options

    def report(self, summary: dict, message: str) -> None:
        """The JSON summary on stdout (--json) or one human line on stderr (plain text: paths may hold [brackets])."""
        if self.json:
            emit_json(summary)
        else:
            console.print(message, markup=False, highlight=False, soft_wrap=True)

    def show(self, summary, rendering) -> None:
        """A result a person reads (a table, a listing): the JSON summary with --json, else `rendering`, both on
        stdout, where a pipe or `> file` gets them."""
        if self.json:
            emit_json(summary)
        else:
            results.print(rendering, highlight=False, soft_wrap=True)

    def say(self, message: str, markup: bool = False) -> None:
        """A line on stderr (not with --json); `markup`: the message holds rich markup, its values escaped."""
        if not self.json:
            console.print(message, markup=markup, highlight=False, soft_wrap=True)

    def warn(self, message: str | None) -> None:
        """A warning line, when there is one (e.g. `builtin_model_warning`'s)."""
        if message:
            self.say(f"[yellow]{escape(message)}[/]", markup=True)


@dataclass
class _Generated:
    param: str
    path: tuple[str, ...]  # keys from the model root to the field


def cli_fields(model: type[Settings]) -> list[tuple[tuple[str, ...], type[Settings], str, Cli]]:
    """(key path, owning model, field name, Cli) of every option a model puts on the command line."""
    found = []
    for name in ordered_fields(model):
        cli = metadata_of(model, name, Cli)
        if cli is not None:
            found.append(((key_of(model, name),), model, name, cli))
    for dotted, cli in model.cli_nested.items():
        *sections, last = dotted.split(".")
        owner, path = model, []
        for section in sections:
            path.append(section)
            owner = section_model(owner, section)
            if owner is None:
                raise TypeError(f"{model.__name__}.cli_nested: {dotted} is not inside a section")
        if last not in owner.model_fields:
            raise TypeError(f"{model.__name__}.cli_nested: no field {dotted}")
        found.append((tuple(path) + (key_of(owner, last),), owner, last, cli))
    return found


def flag_of(name: str, cli: Cli) -> str:
    return cli.flag or "--" + name.replace("_", "-")


def _help(owner: type[Settings], name: str, default: Any) -> str:
    info = owner.model_fields[name]
    parts = [info.description or ""]
    if default not in (None, [], False, ""):
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        parts.append(f"[default: {shown}]")
    # Square brackets would be read as rich markup by the help renderer.
    return escape(" ".join(p for p in parts if p))


def _default_at(instance: Settings, path: tuple[str, ...]) -> Any:
    value = instance.model_dump(mode="json", by_alias=True)
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _option(owner: type[Settings], name: str, flags: list[str], cli: Cli, default: Any = None, hidden: bool = False):
    info = owner.model_fields[name]
    inner = unwrap_optional(info.annotation)
    help_text = None if hidden else _help(owner, name, default)
    if inner is bool:
        decls = [f"{flags[0]}/--no-{flags[0].removeprefix('--')}", *flags[1:]]
        return Annotated[Optional[bool], typer.Option(*decls, help=help_text, hidden=hidden, show_default=False)]
    if typing.get_origin(inner) is list:
        return Annotated[Optional[list[str]], typer.Option(*flags, help=help_text, hidden=hidden, show_default=False,
                                                           metavar=cli.metavar or "TEXT")]
    metavar = cli.metavar or ("|".join(choices_of(info.annotation)) if choices_of(info.annotation) else None) \
        or _METAVARS.get(inner, "VALUE")
    # Values reach the model as text, so every bad value is reported by one validator in one line.
    return Annotated[Optional[str], typer.Option(*flags, help=help_text, hidden=hidden, show_default=False,
                                                 metavar=metavar)]


ConfigOption = Annotated[Optional[Path], typer.Option("--config", help="YAML file of settings over the command's "
                                                      "defaults (see configs/).", rich_help_panel="Run")]
SetOption = Annotated[Optional[list[str]], typer.Option("--set", help="Set one setting: --set key=value "
                                                        "(nested: --set section.key=value).", metavar="KEY=VALUE",
                                                        rich_help_panel="Run")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable results on stdout.",
                                          rich_help_panel="Run")]


def command(model: type[Settings], name: str, after_load: Callable[[Settings], Settings] | None = None):
    """Decorate `func(settings, run, **own_params)` into a Typer command with the model's options.

    `after_load(settings)` runs once the settings are validated (checkpoint names are resolved there,
    so a bad name fails before any work); it returns the settings to use.
    """

    def wrap(func: Callable) -> Callable:
        hints = typing.get_type_hints(func, include_extras=True)  # the body's annotations may be strings
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in list(inspect.signature(func).parameters.values())[2:]]
        taken = {p.name for p in own}
        generated: list[_Generated] = []
        params: list[inspect.Parameter] = list(own)
        defaults = model()
        for path, owner, field, cli in cli_fields(model):
            flag = flag_of(field if len(path) == 1 else "_".join(path), cli)
            param = "opt_" + "__".join(path)
            assert param not in taken, param
            params.append(inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, default=None,
                                            annotation=_option(owner, field, [flag] + ([cli.short] if cli.short
                                                                                       else []), cli,
                                                               _default_at(defaults, path))))
            generated.append(_Generated(param, path))
            for k, alias in enumerate(cli.hidden):
                hidden_param = f"{param}__old{k}"
                params.append(inspect.Parameter(hidden_param, inspect.Parameter.KEYWORD_ONLY, default=None,
                                                annotation=_option(owner, field, [alias], cli, hidden=True)))
                generated.append(_Generated(hidden_param, path))
        for extra, annotation in (("config", ConfigOption), ("set_", SetOption), ("json_out", JsonOption)):
            params.append(inspect.Parameter(extra, inspect.Parameter.KEYWORD_ONLY,
                                            default=False if extra == "json_out" else None, annotation=annotation))

        @functools.wraps(func)
        def wrapper(**kwargs):
            values: dict[str, Any] = {}
            on_command_line = set()
            for item in generated:
                given = kwargs.pop(item.param)
                if given is not None:
                    _put(values, nest(list(item.path), given))
                    on_command_line.add(".".join(item.path))
            config, overrides = kwargs.pop("config"), kwargs.pop("set_") or ()
            settings = load_settings(model, name, config, overrides, values)
            # Settings given any way but by default (a re-run of a recorded photo folder keeps the rest).
            on_command_line |= {text.partition("=")[0].strip() for text in overrides}
            if config is not None:
                on_command_line |= set(read_config_file(config))
            if after_load is not None:
                settings = after_load(settings)
            return func(settings, Run(json=kwargs.pop("json_out"), given=frozenset(on_command_line)), **kwargs)

        wrapper.__signature__ = inspect.Signature(params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__  # typer must see the generated signature, not the body's
        return reports_errors(wrapper)

    return wrap


def _put(target: dict, data: dict) -> None:
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _put(target[key], value)
        else:
            target[key] = value
