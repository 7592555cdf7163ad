"""YAML files sgtool reads (configs, the directions registry): a mapping each, every failure one line."""

from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import SgtoolError


MAX_BYTES = 1_000_000  # far beyond any config; a bigger file is a mistake (or /dev/zero)
MAX_DEPTH = 32  # the deepest setting is three levels down


class YamlLoader(yaml.SafeLoader):
    """YAML without 1.1's base-60 numbers: `-2:2:3` (a START:STOP:COUNT range) stays text, not -7323. Bounded:
    no aliases (a few lines of `*name` expand to billions of values) and no nesting deeper than MAX_DEPTH."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in sgtool's YAML",
                                              self.peek_event().start_mark)
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

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
    if path.exists() and not path.is_file():
        raise SgtoolError(f"{what} {path} is not a regular file; give a YAML file")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise SgtoolError(f"{what} {path} is larger than {MAX_BYTES // 1_000_000} MB; a config is a few lines of "
                              "key: value")
        text = raw.decode("utf-8")
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
