"""Device selection shared by every subcommand (`--device auto|cpu|cuda`)."""

from __future__ import annotations

import torch

from .errors import SgtoolError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """auto = the first CUDA GPU when one is usable, else the CPU."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SgtoolError("--device cuda was asked for but no CUDA GPU is usable here; use --device cpu")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise SgtoolError(f"unknown device {name!r}; choose auto, cpu or cuda")
