"""One dispatch point for the generator's low-level ops.

Models call `sgtool.kernels.bias_act/upfirdn2d/filtered_lrelu`; which implementation runs is
chosen per block of code with `sgtool.kernels.use(...)`:

- "ref": the pure-PyTorch reference (ref.py), which defines the numbers;
- "jit": the compiled C++/CUDA kernels (jit.py builds and vets them on first use); when they
  cannot be used, or an op gets arguments they do not handle, a warning says so and the
  reference runs instead;
- "auto" (default): the compiled kernels where they are built and passed their parity check,
  else quietly the reference.
"""

from __future__ import annotations

import contextlib
import contextvars
import math

import torch

from . import jit, jit_ops, ref

BACKENDS = ("auto", "ref", "jit")

_backend: contextvars.ContextVar[str] = contextvars.ContextVar("sgtool_kernel_backend", default="auto")


def current_backend() -> str:
    return _backend.get()


def set_backend(name: str) -> None:
    """Select the backend for the rest of this context (CLI `--kernels`)."""
    _backend.set(_check(name))


@contextlib.contextmanager
def use(name: str):
    """`with sgtool.kernels.use("jit"):` runs the enclosed code on the chosen backend."""
    token = _backend.set(_check(name))
    try:
        yield
    finally:
        _backend.reset(token)


def _check(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


def compiled_for(device: torch.device) -> bool:
    """Whether ops on `device` run the compiled kernels under the current backend (building them if needed)."""
    return _backend.get() != "ref" and jit.module_for(torch.device(device)) is not None


def _module(op: str, x, *others, dtypes=jit_ops.SUPPORTED_DTYPES):
    """The compiled module to run `op` on, or None for the reference."""
    backend = _backend.get()
    if backend == "ref" or not isinstance(x, torch.Tensor):
        return None
    module = jit.module_for(x.device)
    if module is None:
        return None
    if not jit_ops.supports(x, *others, dtypes=dtypes):
        if backend == "jit":
            jit.warn_once(f"unsupported-{op}-{x.dtype}-{x.device.type}",
                          f"sgtool kernels: {op} on {x.dtype} {x.device.type} tensors (or with a filter that needs "
                          "gradients) is not compiled; using the reference op for it")
        return None
    return module


def _float32(x, *others):
    """Inside a bfloat16 autocast region (PTI's --precision bf16), bf16 inputs as float32: these ops are
    memory-bound, gain nothing from bf16 and keep the compiled kernels, which take float32. Outside one, a
    bf16 call stays bf16 (and runs on the reference)."""
    tensors = (x, *others)
    if not (isinstance(x, torch.Tensor) and torch.is_autocast_enabled(x.device.type)):
        return list(tensors)
    return [t.float() if isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16 else t for t in tensors]


def bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    x, b = _float32(x, b)
    module = _module("bias_act", x, b.detach() if b is not None else None)
    # Anything unusual (unknown activation, misfit bias) goes to the reference, which explains it.
    fits = act in jit_ops.ACT_INDEX and x.ndim > 0 and (b is None or (b.ndim == 1 and b.shape[0] == x.shape[dim]))
    if module is None or not fits:
        return ref.bias_act(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
    return jit_ops.bias_act(module, x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)


def upfirdn2d(x, f=None, up=1, down=1, padding=0, flip_filter=False, gain=1):
    x, f = _float32(x, f)
    module = _module("upfirdn2d", x, f)
    if module is None or x.ndim != 4 or (f is not None and f.ndim not in (1, 2)):
        return ref.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    return jit_ops.upfirdn2d(module, x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


def filtered_lrelu(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=math.sqrt(2), slope=0.2, clamp=None,
                   flip_filter=False):
    bf16_in_place = x.dtype == torch.bfloat16 and x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
    module = None
    if bf16_in_place:  # the CPU kernel takes bf16 as it is, sparing two casts of the layer's largest tensors
        module = _module("filtered_lrelu", x, fu, fd, b.detach() if b is not None else None,
                         dtypes=jit_ops.FILTERED_LRELU_CPU_DTYPES)
    if module is None:
        x, fu, fd, b = _float32(x, fu, fd, b)
        module = _module("filtered_lrelu", x, fu, fd, b.detach() if b is not None else None)
    if module is None or x.ndim != 4 or any(f is not None and f.ndim not in (1, 2) for f in (fu, fd)) or \
            (b is not None and b.shape != (x.shape[1],)):
        return ref.filtered_lrelu(x, fu, fd, b, up=up, down=down, padding=padding, gain=gain, slope=slope,
                                  clamp=clamp, flip_filter=flip_filter)
    return jit_ops.filtered_lrelu(module, x, fu, fd, b, up=up, down=down, padding=padding, gain=gain, slope=slope,
                                  clamp=clamp, flip_filter=flip_filter)
