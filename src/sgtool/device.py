"""Device selection shared by every subcommand (`--device auto|cpu|cuda`)."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

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


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # CPU instructions that make bfloat16 matmuls and convolutions fast


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def bf16_support(device: torch.device) -> str | None:
    """None when bfloat16 compute is fast on `device`, else why not (one phrase)."""
    if device.type == "cuda":
        return None if torch.cuda.is_bf16_supported() else "this GPU has no bfloat16 support"
    if device.type == "cpu":
        return None if cpu_flags() & set(BF16_CPU_FLAGS) else "this CPU has neither AVX512-BF16 nor AMX"
    return f"bfloat16 is not used on {device.type}"


def auto_takes_bf16(device: torch.device) -> bool:
    """Where `auto` takes bf16: CPUs with AMX, where a 1024 px PTI step measured 1.2-1.6x faster than float32 for
    all three architectures (bench/README.md, pti_precision), and GPUs with bfloat16 (autocast's usual choice there;
    not yet measured by sgtool). CPUs with AVX512-BF16 but no AMX are unmeasured on today's path, so auto stays
    float32 there; `bf16` still runs on them."""
    if device.type == "cuda":
        return bf16_support(device) is None
    return device.type == "cpu" and "amx_bf16" in cpu_flags()


def resolve_precision(precision: str, device: torch.device, setting: str = "--precision") -> str:
    """fp32 or bf16: `auto` is bf16 where `auto_takes_bf16`, else fp32; bf16 asked for where the hardware has
    no bfloat16 falls back to fp32 with one warning naming `setting`."""
    if precision == "fp32":
        return "fp32"
    if precision == "auto":
        return "bf16" if auto_takes_bf16(device) else "fp32"
    missing = bf16_support(device)
    if missing is None:
        return "bf16"
    warnings.warn(f"sgtool: {setting} bf16: {missing}; using float32", RuntimeWarning, stacklevel=2)
    return "fp32"


def autocast(precision: str, device: torch.device):
    """The generator and LPIPS forward in bfloat16 where `precision` (resolved) is bf16: convolutions and matmuls
    in bf16, weights, optimizer state and losses stay float32."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
