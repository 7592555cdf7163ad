"""YAML files sgtool reads (configs, the directions registry): a mapping each, every failure one line."""

from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import SgtoolError


class YamlLoader(yaml.SafeLoader):
    """YAML without 1.1's base-60 numbers: `-2:2:3` (a START:STOP:COUNT range) stays text, not -7323."""

    def resolve(self, kind, value, implicit):
        tag = super().resolve(kind, value, implicit)
        if kind is yaml.ScalarNode and tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float") and ":" in value:
            return "tag:yaml.org,2002:str"
        return tag


def read_config_file(path: str | Path, what: str = "config file") -> dict:
    """A YAML mapping from `path`; every way of being unreadable is one line."""
    path = Path(path)
    if path.is_dir():
        raise SgtoolError(f"{what} {path} is a directory; give a YAML file (e.g. a copy of configs/<command>.yaml)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SgtoolError(f"{what} {path} does not exist") from None
    except UnicodeDecodeError:
        raise SgtoolError(f"{what} {path} is not a text file; give a YAML file of key: value lines") from None
    except OSError as exc:
        raise SgtoolError(f"{what} {path} cannot be read ({exc.strerror or exc})") from None
    try:
        data = yaml.load(text, Loader=YamlLoader)
    except yaml.YAMLError as exc:
        raise SgtoolError(f"{what} {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SgtoolError(f"{what} {path} must hold a mapping of keys to values, not a {type(data).__name__}")
    return data
