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


def seed_ranges(text: str, limit: int = 2 ** 32) -> list[range]:
    """'0-7,12' -> [range(0, 8), range(12, 13)] without expanding them (a range may hold billions of seeds)."""
    ranges = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise SgtoolError(f"cannot read seed {part!r}: use non-negative numbers and ranges like 0-7,12")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            raise SgtoolError(f"seed range {part!r} runs backwards")
        if hi >= limit:
            raise SgtoolError(f"seed {hi} is too large: seeds go from 0 to {limit - 1} (numpy's RandomState)")
        ranges.append(range(lo, hi + 1))
    if not ranges:
        raise SgtoolError("no seed given")
    return ranges
