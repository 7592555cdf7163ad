"""The registry of public checkpoints (`configs/models.yaml`): names -> URLs, file names, checksums."""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from ..errors import SgtoolError

KINDS = ("generator", "encoder", "direction", "backbone", "clip", "styleclip")
REGISTRY_ENV = "SGTOOL_MODELS_REGISTRY"
DEFAULT_REGISTRY = Path(__file__).resolve().parents[1] / "configs" / "models.yaml"
# The random-weight generators `sgtool.models.builtin` makes from a seed: names that are never downloaded.
BUILTIN_GENERATOR_NAMES = ("tiny-stylegan3-t", "tiny-stylegan3-r", "tiny-stylegan2")

_SHA256 = re.compile(r"[0-9a-f]{64}")
NEED_ROLES = ("network", "w_encoder")
_SAFE_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+\-]*")


@dataclass(frozen=True)
class ModelEntry:
    """One downloadable checkpoint."""

    name: str
    kind: str
    file: str
    urls: tuple[str, ...]
    page: str | None = None
    size: int | None = None
    sha256: str | None = None
    licence: str = ""
    used_by: tuple[str, ...] = ()
    description: str = ""
    # Files this one works only with, by role (`network`, `w_encoder`): filled in when the user names none.
    needs: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict:
        data = asdict(self)
        data["urls"], data["used_by"], data["needs"] = list(self.urls), list(self.used_by), dict(self.needs)
        return data


def registry_path(path: str | os.PathLike | None = None) -> Path:
    """The registry in use: an explicit path, else $SGTOOL_MODELS_REGISTRY, else the packaged one."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get(REGISTRY_ENV, "").strip()
    return Path(env).expanduser() if env else DEFAULT_REGISTRY


def load_registry(path: str | os.PathLike | None = None) -> dict[str, ModelEntry]:
    """Parse and validate the registry; any problem is one line naming the file and the entry."""
    source = registry_path(path)
    try:
        data = yaml.safe_load(source.read_text())
    except FileNotFoundError:
        raise SgtoolError(f"model registry {source} does not exist (check ${REGISTRY_ENV})") from None
    except yaml.YAMLError as exc:
        raise SgtoolError(f"model registry {source} is not valid YAML: {str(exc).splitlines()[0]}") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise SgtoolError(f"model registry {source} needs a top-level 'models:' mapping of names to entries")
    entries = {str(name): _parse_entry(str(name), fields, source) for name, fields in models.items()}
    files: dict[str, str] = {}
    for entry in entries.values():
        if entry.file in files:
            raise SgtoolError(f"model registry {source}: {entry.name} and {files[entry.file]} share the file name "
                              f"{entry.file}; cache file names must be unique")
        files[entry.file] = entry.name
    return entries


def _parse_entry(name: str, fields, source: Path) -> ModelEntry:
    def bad(problem: str) -> SgtoolError:
        return SgtoolError(f"model registry {source}, entry {name!r}: {problem}")

    if not isinstance(fields, dict):
        raise bad("must be a mapping of fields")
    if fields.get("kind") not in KINDS:
        raise bad(f"kind must be one of {', '.join(KINDS)}, got {fields.get('kind')!r}")
    file = str(fields.get("file") or "")
    if not _SAFE_FILE.fullmatch(file) or ".." in file:
        raise bad(f"file must be a plain file name (no folders), got {file!r}")
    urls = fields.get("urls")
    if isinstance(urls, str):
        urls = [urls]
    if not urls or not all(isinstance(u, str) and u.startswith(("https://", "http://")) for u in urls):
        raise bad("urls must list at least one http(s) URL")
    size = fields.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise bad(f"size must be a positive number of bytes or null, got {size!r}")
    sha256 = fields.get("sha256")
    if sha256 is not None:
        sha256 = str(sha256).lower()
        if not _SHA256.fullmatch(sha256):
            raise bad("sha256 must be 64 hex digits or null")
    used_by = fields.get("used_by") or []
    needs = fields.get("needs") or {}
    if not isinstance(needs, dict) or not set(needs) <= set(NEED_ROLES):
        raise bad(f"needs must map {' / '.join(NEED_ROLES)} to registry names, got {needs!r}")
    return ModelEntry(name=name, kind=fields["kind"], file=file, urls=tuple(urls), page=fields.get("page"),
                      size=size, sha256=sha256, licence=str(fields.get("licence") or ""),
                      used_by=tuple(str(c) for c in used_by), description=str(fields.get("description") or ""),
                      needs=tuple((str(role), str(other)) for role, other in needs.items()))


def find_entry(name: str, path: str | os.PathLike | None = None) -> ModelEntry | None:
    return load_registry(path).get(str(name))


def get_entry(name: str, path: str | os.PathLike | None = None) -> ModelEntry:
    """The entry called `name`, or one line suggesting the closest names."""
    entries = load_registry(path)
    if name in entries:
        return entries[name]
    close = difflib.get_close_matches(name, list(entries), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise SgtoolError(f"{name!r} is not in the model registry {registry_path(path)}{hint} "
                      "(`sgtool models list` shows every name)")
