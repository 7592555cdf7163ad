"""Where downloaded checkpoints live and what we remember about them.

Layout under $SGTOOL_HOME (default: the platform's user cache folder + /sgtool):
  models/<file>                the verified checkpoint (only ever created by an atomic rename)
  models/<file>.part           an interrupted download, resumed with an HTTP Range request
  models/<file>.part.json      the URL and validators (ETag) the partial file came from
  models/<file>.lock           held while one process downloads the file
  models/.records/<file>.json  size and SHA-256 of the first good download (checked on every later one)
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from .registry import ModelEntry
from ..utils.records import read_json

HOME_ENV = "SGTOOL_HOME"


def sgtool_home() -> Path:
    """$SGTOOL_HOME, else the per-user cache folder the platform expects."""
    env = os.environ.get(HOME_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return base / "sgtool" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "sgtool"
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "sgtool"


def models_dir() -> Path:
    return sgtool_home() / "models"


def cached_path(entry: ModelEntry) -> Path:
    return models_dir() / entry.file


def part_path(entry: ModelEntry) -> Path:
    return models_dir() / f"{entry.file}.part"


def lock_path(entry: ModelEntry) -> Path:
    """The download lock (its empty file stays after use, as lock files must: kept out of the models folder)."""
    return models_dir() / ".locks" / f"{entry.file}.lock"


def record_path(entry: ModelEntry) -> Path:
    return models_dir() / ".records" / f"{entry.file}.json"


def read_record(entry: ModelEntry) -> dict | None:
    try:
        record = read_json(record_path(entry))
    except (FileNotFoundError, ValueError):
        return None
    return record if isinstance(record, dict) and "sha256" in record else None


def write_record(entry: ModelEntry, size: int, sha256: str, origin: str) -> dict:
    """Remember a verified file; `origin` says how it arrived (download URL or 'placed by hand')."""
    record = {"name": entry.name, "file": entry.file, "size": size, "sha256": sha256, "origin": origin,
              "published_sha256": entry.sha256 is not None,
              "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    _write_json_atomic(record, record_path(entry))
    return record


def _write_json_atomic(data: dict, path: Path) -> None:
    # Kept free of sgtool.utils.io so that `sgtool models ...` starts without importing torch.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def looks_like_html(head: bytes) -> bool:
    """A web page where a binary checkpoint should be (quota, sign-in or virus-scan pages)."""
    text = head[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text[:512]


def file_looks_like_html(path: Path) -> bool:
    with open(path, "rb") as f:
        return looks_like_html(f.read(1024))
