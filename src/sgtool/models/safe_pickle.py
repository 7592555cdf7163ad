"""Restricted unpickling of NVIDIA's network pickles.

An official `.pkl` holds each network as a "persistent object": the Python source of its
module plus the pickled module state, rebuilt on load by exec'ing that source. We never run
it. The unpickler below resolves only an explicit allowlist of globals (tensor and numpy
rebuilders, OrderedDict, EasyDict, the persistence hook); each network comes back as a
`PersistentRecord` from which we copy tensors into our own modules.
"""

from __future__ import annotations

import collections
import io
import pathlib
import pickle
import re
from dataclasses import dataclass, field

import numpy as np
import torch


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global outside the allowlist."""

    def __init__(self, qualname: str):
        super().__init__(qualname)
        self.qualname = qualname


class EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict: a dict with attribute access, nothing else."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class PersistentRecord:
    """One pickled network module: its class name and its `__dict__` (source code discarded)."""

    class_name: str
    version: int
    state: dict = field(repr=False)

    @property
    def submodules(self) -> dict:
        return dict(self.state.get("_modules") or {})

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args") or ())


def _reconstruct_persistent_obj(meta):
    if not isinstance(meta, dict) or meta.get("type") != "class" or "state" not in meta:
        raise pickle.UnpicklingError("malformed persistent object record")
    # meta["module_src"] is deliberately ignored: it is code.
    return PersistentRecord(class_name=str(meta.get("class_name")), version=int(meta.get("version", 0)),
                            state=dict(meta["state"]))


# Trainers' options (pSp, e4e, ReStyle, HyperStyle) hold paths; building one runs no code.
SAFE_TORCH_GLOBALS = [pathlib.PosixPath, pathlib.WindowsPath]


def safe_torch_load(source, mmap: bool = False):
    """`torch.load(weights_only=True)` admitting SAFE_TORCH_GLOBALS; a refusal is an UnsafePickleError naming
    the global it met (torch's own message advises turning the safe loader off: never passed on). `mmap`: tensors
    are mapped, not read (a zip-format file on disk), for a look at the keys."""
    try:
        with torch.serialization.safe_globals(SAFE_TORCH_GLOBALS):
            return torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found or "Unsupported" in str(exc) or "weights_only" in str(exc).lower():
            raise UnsafePickleError(found.group(1) if found else "an object other than tensors") from None
        raise


def _load_storage_from_bytes(data: bytes):
    # Storages are nested legacy torch.save streams; only tensors may come out of them.
    return safe_torch_load(io.BytesIO(data))


def _numpy_multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:
        from numpy.core import multiarray
    return multiarray


_MULTIARRAY = _numpy_multiarray()

ALLOWED_GLOBALS = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch", "Size"): torch.Size,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    # Pickles written under numpy 1 and numpy 2 spell the module differently.
    ("numpy.core.multiarray", "_reconstruct"): _MULTIARRAY._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _MULTIARRAY._reconstruct,
    ("numpy.core.multiarray", "scalar"): _MULTIARRAY.scalar,
    ("numpy._core.multiarray", "scalar"): _MULTIARRAY.scalar,
}


NUMPY_GLOBALS = {key: value for key, value in ALLOWED_GLOBALS.items() if key[0].startswith("numpy")}


class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, stream, allowed: dict | None = None):
        super().__init__(stream)
        self.allowed = ALLOWED_GLOBALS if allowed is None else allowed

    def find_class(self, module, name):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("unexpected persistent id in a network pickle")


def restricted_load(stream, allowed: dict | None = None) -> object:
    """Unpickle from a binary stream, refusing every global outside `allowed` (default ALLOWED_GLOBALS)."""
    return RestrictedUnpickler(stream, allowed).load()


def record_state_dict(record: PersistentRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten a pickled module tree into a state dict with the same names nn.Module would use."""
    if prefix.count(".") > MAX_DEPTH:
        raise pickle.UnpicklingError(f"the module tree nests deeper than {MAX_DEPTH} levels")
    state = record.state
    out: dict[str, torch.Tensor] = {}
    non_persistent = set(state.get("_non_persistent_buffers_set") or ())
    for name, tensor in (state.get("_parameters") or {}).items():
        if tensor is not None:
            out[prefix + name] = tensor
    for name, tensor in (state.get("_buffers") or {}).items():
        if tensor is not None and name not in non_persistent:
            out[prefix + name] = tensor
    for name, sub in (state.get("_modules") or {}).items():
        if sub is None:
            continue
        if not isinstance(sub, PersistentRecord):
            raise pickle.UnpicklingError(f"submodule {prefix + name} is not a network record")
        out.update(record_state_dict(sub, prefix + name + "."))
    return out


MAX_DEPTH = 32  # nesting of constructor arguments and module trees; real networks use fewer than 8


def plain(value, depth: int = 0):
    """EasyDicts, numpy scalars and arrays from a pickle -> plain Python values (for kwargs and JSON)."""
    if depth > MAX_DEPTH:
        raise pickle.UnpicklingError(f"constructor arguments nest deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        return {str(k): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, depth + 1) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
