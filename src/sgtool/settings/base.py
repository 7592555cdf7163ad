"""Typed settings: each setting is declared once, as a field of its command's model.

A field carries its type, default, range and help text. The same model validates and converts
every source of values, in this order (later wins):

    model defaults -> configs/<command>.yaml -> --config FILE -> --set key=value -> CLI options

`Cli` marks a field that is also a command-line option (the flag is the field name with dashes
unless given); `Renamed` lists older spellings of a key, accepted everywhere. Nested sections are
nested models, so `--set tune.lr=1e-4` is converted like any other float.
"""

from __future__ import annotations

import copy
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from ..errors import SgtoolError
from ..utils.yaml_files import YamlLoader, read_config_file

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def config_path(command: str) -> Path:
    """The shipped defaults of a command as typed (`directions sefa` -> configs/directions-sefa.yaml)."""
    return CONFIG_DIR / f"{command.replace(' ', '-')}.yaml"


@dataclass(frozen=True)
class Cli:
    """A field exposed as a command-line option.

    `flag` replaces the default `--field-name`; `short` adds a one-letter form; `hidden` are older
    flags still accepted (not shown in --help); `metavar` names the value in --help.
    """

    flag: str | None = None
    short: str | None = None
    hidden: tuple[str, ...] = ()
    metavar: str | None = None


@dataclass(frozen=True)
class Renamed:
    """Older key names of a field (YAML, --set and Python keyword arguments)."""

    old: tuple[str, ...]

    def __init__(self, *old: str):
        object.__setattr__(self, "old", tuple(old))


@dataclass(frozen=True)
class Checkpoint:
    """A field naming a checkpoint: a file, a registry name or a built-in model, resolved before work."""

    kind: str


@dataclass(frozen=True)
class Output:
    """A field naming where results go (`dir` or `file`): checked to be writable before any work."""

    kind: str = "dir"


class Settings(BaseModel):
    """Base of every settings model and section: unknown keys, NaN and infinity are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True, populate_by_name=True,
                              protected_namespaces=())

    # Options on the command line that set a field of a nested section: {"section.field": Cli(...)}.
    cli_nested: ClassVar[dict[str, Cli]] = {}

    @model_validator(mode="before")
    @classmethod
    def _accept_old_names(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        renames = old_names(cls)
        if not any(key in renames for key in data):
            return data
        out = {}
        for key, value in data.items():
            new = renames.get(key, key)
            if new in out:  # two keys for one field: one of them is an old name, in either order
                old = key if key != new else next(k for k in data if renames.get(k) == new)
                raise ValueError(f"{old!r} is the old name of {new!r}; give only one of them")
            out[new] = value
        return out

    def record(self) -> dict:
        """JSON-ready values (as written beside outputs, so a run can be reproduced)."""
        return self.model_dump(mode="json", by_alias=True)


# --------------------------------------------------------------------------------------------------
# Field introspection


def metadata_of(model: type[BaseModel], name: str, kind: type):
    return next((m for m in model.model_fields[name].metadata if isinstance(m, kind)), None)


def old_names(model: type[BaseModel]) -> dict[str, str]:
    out = {}
    for name in model.model_fields:
        renamed = metadata_of(model, name, Renamed)
        for old in renamed.old if renamed else ():
            out[old] = name
    return out


def ordered_fields(model: type[BaseModel]) -> list[str]:
    """Field names with the model's own first, then each base's (mixins such as device/kernels last)."""
    order: list[str] = []
    for cls in model.__mro__:
        for name in getattr(cls, "__annotations__", {}):
            if name in model.model_fields and name not in order:
                order.append(name)
    return order + [name for name in model.model_fields if name not in order]


def key_of(model: type[BaseModel], name: str) -> str:
    """The key a field has in YAML files and --set (its alias, e.g. `class`, or its name)."""
    return model.model_fields[name].alias or name


def field_for_key(model: type[BaseModel], key: str) -> str | None:
    """The field a YAML/--set key sets (by name, alias or old name), or None when there is none."""
    if key in model.model_fields:
        return key
    for name, info in model.model_fields.items():
        if info.alias == key:
            return name
    return old_names(model).get(key)


def unwrap_optional(annotation):
    """`X | None` -> X (other annotations unchanged)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def section_model(model: type[BaseModel], name: str) -> type[Settings] | None:
    """The nested model of a section field, or None for plain values."""
    inner = unwrap_optional(model.model_fields[name].annotation)
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def is_mapping(model: type[BaseModel], name: str) -> bool:
    inner = unwrap_optional(model.model_fields[name].annotation)
    return inner is dict or typing.get_origin(inner) is dict


def is_list(model: type[BaseModel], name: str) -> bool:
    """A list field, which may also be written as a YAML mapping ({NAME: FILE} for NAME=FILE items)."""
    return typing.get_origin(unwrap_optional(model.model_fields[name].annotation)) is list


def choices_of(annotation) -> list[str] | None:
    inner = unwrap_optional(annotation)
    if typing.get_origin(inner) is Literal:
        return [str(v) for v in typing.get_args(inner)]
    return None


# --------------------------------------------------------------------------------------------------
# Reading values


def parse_set(item: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], value read as YAML: numbers, booleans, lists, null)."""
    key, sep, raw = str(item).partition("=")
    keys = [k.strip() for k in key.split(".")]
    if not sep or not all(keys):
        raise SgtoolError(f"--set expects key=value (e.g. --set trunc=0.5 or --set tune.lr=1e-4), got {item!r}")
    try:
        value = yaml.load(raw, Loader=YamlLoader) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return keys, value


def nest(keys: list[str], value: Any) -> dict:
    for key in reversed(keys):
        value = {key: value}
    return value


class _Layers:
    """Values merged layer by layer, remembering which source set each key (for error messages)."""

    def __init__(self, model: type[Settings]):
        self.model = model
        self.values: dict = {}
        self.sources: dict[tuple[str, ...], str] = {}

    def add(self, data: dict, source: str) -> None:
        self._merge(self.model, self.values, data, source, ())

    def _merge(self, model, target: dict, data: dict, source: str, prefix: tuple[str, ...]) -> None:
        for key, value in data.items():
            key = str(key)
            name = field_for_key(model, key)
            where = ".".join(prefix + (key,))
            if name is None:
                known = ", ".join(sorted(key_of(model, n) for n in model.model_fields))
                raise SgtoolError(f"unknown setting {where!r} in {source}; known keys"
                                  f"{' of ' + '.'.join(prefix) if prefix else ''}: {known}")
            canonical = key_of(model, name)
            path = prefix + (canonical,)
            section = section_model(model, name)
            if section is not None and isinstance(value, dict):
                current = target.get(canonical)
                if not isinstance(current, dict):
                    current = {}
                target[canonical] = current
                self._merge(section, current, value, source, path)
                continue
            if isinstance(value, dict) and section is None and not (is_mapping(model, name) or is_list(model, name)):
                raise SgtoolError(f"setting {'.'.join(path)!r} in {source} is a single value, not a section "
                                  f"(write {'.'.join(path)}=VALUE)")
            if is_mapping(model, name) and isinstance(value, dict) and isinstance(target.get(canonical), dict):
                value = {**target[canonical], **value}
            target[canonical] = copy.deepcopy(value)
            self.sources[path] = source
            for other in [p for p in self.sources if p[:len(path)] == path and p != path]:
                del self.sources[other]

    def source_of(self, loc: Iterable) -> str | None:
        loc = tuple(str(part) for part in loc)
        for length in range(len(loc), 0, -1):
            if loc[:length] in self.sources:
                return self.sources[loc[:length]]
        return None


def describe_validation_error(exc: ValidationError, command: str, layers: _Layers | None = None) -> str:
    """The first problem of a ValidationError as one line naming the key, the value, where it came from and the fix."""
    error = exc.errors()[0]
    loc = [str(part) for part in error.get("loc", ()) if not str(part).startswith("function-")]
    message = error.get("msg", "invalid value").removeprefix("Value error, ")
    if not loc:  # a check across several settings: its message names them
        return f"{message}; see `sgtool {command} --help` or configs/{config_path(command).name}"
    key = ".".join(loc)
    value = error.get("input")
    source = layers.source_of(loc) if layers is not None else None
    shown = "" if isinstance(value, dict) or value is None and "missing" in error.get("type", "") \
        else f" = {value!r}"
    origin = f" (from {source})" if source else ""
    return (f"setting {key}{shown}{origin}: {message}; see `sgtool {command} --help` or "
            f"configs/{config_path(command).name}")


def load_settings(model: type[Settings], command: str | None = None, config_file: str | Path | None = None,
                  overrides: Iterable[str] = (), cli_values: dict | None = None) -> Settings:
    """Validate defaults, the shipped YAML, a user's file, --set items and CLI values into `model`."""
    return _validated(model, command, _layered(model, command, config_file, overrides, cli_values))


def explain_settings(model: type[Settings], command: str, config_file: str | Path | None = None,
                     overrides: Iterable[str] = ()) -> list[tuple[str, Any, str]]:
    """Every setting as (dotted key, value, where it came from: default, --config FILE or --set ITEM)."""
    layers = _layered(model, command, config_file, overrides, None)
    settings = _validated(model, command, layers)
    shipped = str(config_path(command))
    rows = []

    def walk(values: dict, prefix: tuple[str, ...]) -> None:
        for key, value in values.items():
            path = prefix + (key,)
            if isinstance(value, dict) and value and all(isinstance(k, str) for k in value) and \
                    layers.source_of(path) in (None, "the defaults", shipped):
                walk(value, path)
                continue
            source = layers.source_of(path)
            rows.append((".".join(path), value, "default" if source in (None, "the defaults", shipped) else source))

    record = settings.record()
    walk({key_of(model, name): record[key_of(model, name)] for name in ordered_fields(model)}, ())  # the help's order
    return rows


def _layered(model: type[Settings], command: str | None, config_file: str | Path | None, overrides: Iterable[str],
             cli_values: dict | None) -> "_Layers":
    layers = _Layers(model)
    layers.add(model().model_dump(mode="json", by_alias=True), "the defaults")  # whole sections, not just set keys
    if command is not None:
        shipped = config_path(command)
        if shipped.is_file():
            layers.add(read_config_file(shipped, "default config"), str(shipped))
    if config_file is not None:
        layers.add(read_config_file(config_file), f"--config {config_file}")
    for item in overrides or ():
        keys, value = parse_set(item)
        layers.add(nest(keys, value), f"--set {item}")
    if cli_values:
        layers.add(cli_values, "the command line")
    return layers


def _validated(model: type[Settings], command: str | None, layers: "_Layers") -> Settings:
    try:
        return model.model_validate(layers.values)
    except ValidationError as exc:
        raise SgtoolError(describe_validation_error(exc, command or model.__name__, layers)) from None


# --------------------------------------------------------------------------------------------------
# configs/<command>.yaml, generated from the model


def defaults_yaml(model: type[Settings], title: str) -> str:
    """The shipped defaults file: every key with its default and its help as a comment."""
    lines = [f"# {title}", "# Generated from the settings model (`python -m sgtool.settings`); edit the model, not this file.",
             "# Copy it, change values and pass it with --config FILE, or override one key with --set key=value."]
    lines += _yaml_lines(model, model(), 0)
    return "\n".join(lines) + "\n"


def _scalar(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _yaml_lines(model: type[BaseModel], instance: BaseModel, indent: int) -> list[str]:
    lines = []
    pad = "  " * indent
    dumped = instance.model_dump(mode="json", by_alias=True)
    for name in ordered_fields(model):
        info = model.model_fields[name]
        key = key_of(model, name)
        comment = f"  # {info.description}" if info.description else ""
        section = section_model(model, name)
        value = getattr(instance, name)
        if section is not None and value is not None:
            lines.append(f"{pad}{key}:{comment}")
            lines += _yaml_lines(section, value, indent + 1)
        else:
            lines.append(f"{pad}{key}: {_scalar(dumped[key])}{comment}")
    return lines
