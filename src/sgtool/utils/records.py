"""JSON records read back (sgtool's own summaries and caches, or crafted ones), without importing torch."""

from __future__ import annotations

import json
import os
from pathlib import Path

MAX_RECORD_BYTES = 256 * 2 ** 20  # far beyond any record sgtool writes (a manifest of a million items is ~200 MB)


def read_json(path: str | os.PathLike):
    """A JSON record (sgtool's own, or a crafted one): at most MAX_RECORD_BYTES and not nested beyond what Python's
    parser can follow; every way of being unreadable is an OSError or a ValueError."""
    path = Path(path)
    if path.stat().st_size > MAX_RECORD_BYTES:
        raise ValueError(f"{path} is larger than {MAX_RECORD_BYTES // 2 ** 20} MB")
    try:
        return json.loads(path.read_text())
    except RecursionError:
        raise ValueError(f"{path} is nested too deeply") from None
