"""Parsers for compact command-line values."""

from __future__ import annotations

import re

from ..errors import SgtoolError


def parse_int_list(text: str, what: str = "value") -> list[int]:
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11] (order kept, inclusive ranges)."""
    values: list[int] = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        if m := re.fullmatch(r"(\d+)-(\d+)", part):
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise SgtoolError(f"{what} range {part!r} runs backwards")
            values.extend(range(lo, hi + 1))
        elif re.fullmatch(r"-?\d+", part):
            values.append(int(part))
        else:
            raise SgtoolError(f"cannot read {what} {part!r}: use numbers and ranges like 0-7,12")
    if not values:
        raise SgtoolError(f"no {what} given")
    return values


def parse_float_pair(text, what: str = "value") -> tuple[float, float]:
    """'0.1,-0.2' (or a 2-sequence) -> (0.1, -0.2)."""
    parts = text if isinstance(text, (list, tuple)) else str(text).split(",")
    try:
        x, y = (float(p) for p in parts)
    except ValueError:
        raise SgtoolError(f"{what} must be two numbers X,Y, got {text!r}") from None
    return x, y
