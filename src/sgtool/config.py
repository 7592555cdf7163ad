"""Per-subcommand defaults: `configs/<command>.yaml`, then `--config FILE`, then `--set key=value`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import yaml

from .errors import SgtoolError

CONFIG_DIR = Path(__file__).parent / "configs"


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise SgtoolError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise SgtoolError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise SgtoolError(f"config file {path} must hold a mapping of keys to values")
    return data


def _merge(base: dict, extra: dict, source: str) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if key not in out:
            known = ", ".join(sorted(base)) or "none"
            raise SgtoolError(f"unknown config key {key!r} in {source}; known keys: {known}")
        if isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = _merge(out[key], value, source)
        else:
            out[key] = value
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], parsed value); the value is read as YAML (numbers, lists, null)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise SgtoolError(f"--set expects key=value, got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def load_config(command: str, config_file: Path | None = None, overrides: Iterable[str] = ()) -> dict:
    """Defaults for `command`, updated by a user file and by single-key overrides."""
    defaults_path = CONFIG_DIR / f"{command}.yaml"
    config = _read_yaml(defaults_path) if defaults_path.exists() else {}
    if config_file is not None:
        config = _merge(config, _read_yaml(Path(config_file)), str(config_file))
    for item in overrides:
        keys, value = parse_override(item)
        nested: Any = value
        for key in reversed(keys):
            nested = {key: nested}
        config = _merge(config, nested, f"--set {item}")
    return config
