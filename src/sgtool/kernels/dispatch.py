"""One dispatch point for the generator's low-level ops.

Models call `sgtool.kernels.bias_act/upfirdn2d/filtered_lrelu`; which implementation runs is
chosen per block of code with `sgtool.kernels.use(...)`. Only the pure-PyTorch reference
backend exists so far; "auto" resolves to it.
"""

from __future__ import annotations

import contextlib
import contextvars

from . import ref

BACKENDS = ("auto", "ref")

_backend: contextvars.ContextVar[str] = contextvars.ContextVar("sgtool_kernel_backend", default="auto")


def current_backend() -> str:
    return _backend.get()


def set_backend(name: str) -> None:
    """Select the backend for the rest of this context (CLI `--kernels`)."""
    _backend.set(_check(name))


@contextlib.contextmanager
def use(name: str):
    """`with sgtool.kernels.use("ref"):` runs the enclosed code on the chosen backend."""
    token = _backend.set(_check(name))
    try:
        yield
    finally:
        _backend.reset(token)


def _check(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


def bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    return ref.bias_act(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)


def upfirdn2d(x, f=None, up=1, down=1, padding=0, flip_filter=False, gain=1):
    return ref.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


def filtered_lrelu(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=2 ** 0.5, slope=0.2, clamp=None,
                   flip_filter=False):
    return ref.filtered_lrelu(x, fu, fd, b, up=up, down=down, padding=padding, gain=gain, slope=slope,
                              clamp=clamp, flip_filter=flip_filter)
