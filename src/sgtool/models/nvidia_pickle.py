"""Write a generator in NVIDIA's network-pickle layout (a training snapshot dict), without code.

NVIDIA's loaders rebuild each network from Python source stored inside the pickle. We store
no source: every module becomes a persistent-object record (class name + module `__dict__`:
parameters, buffers, submodules, constructor kwargs, plain attributes) that reduces to the
global `torch_utils.persistence._reconstruct_persistent_obj`, exactly the records that
`sgtool.models.load_generator` reads with its restricted unpickler. Tensors are pickled the way
torch pickles them (storages as legacy torch.save byte streams).
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import threading
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..utils.io import atomic_path

PERSISTENCE_MODULE = "torch_utils.persistence"
RECONSTRUCT_NAME = "_reconstruct_persistent_obj"
EASYDICT_MODULE = "dnnlib.util"
PERSISTENT_VERSION = 6
MODULE_SRC = "# exported by sgtool: weights and constructor arguments only, no source code"
PICKLE_PROTOCOL = 4

_STAND_IN_LOCK = threading.Lock()


def _placeholder(module_name: str, attr: str):
    """A fresh object that pickles by reference as `module_name.attr` (never called)."""
    if attr == "EasyDict":
        return type(attr, (dict,), {"__module__": module_name, "__qualname__": attr})

    def reconstruct(meta):
        raise RuntimeError("placeholder for NVIDIA's persistence hook; it only names a global in a pickle")

    reconstruct.__module__, reconstruct.__qualname__, reconstruct.__name__ = module_name, attr, attr
    return reconstruct


@contextlib.contextmanager
def _foreign_globals():
    """Make `torch_utils.persistence._reconstruct_persistent_obj` and `dnnlib.util.EasyDict` importable
    for the duration of one dump, so the pickler can name them; the stand-in modules are removed after.

    Where real modules of those names are already imported (NVIDIA's code in the same process),
    their objects are used instead and nothing is added.
    """
    with _STAND_IN_LOCK:
        added = []
        found = {}
        try:
            for module_name, attr in ((PERSISTENCE_MODULE, RECONSTRUCT_NAME), (EASYDICT_MODULE, "EasyDict")):
                existing = sys.modules.get(module_name)
                if existing is not None:
                    if not hasattr(existing, attr):
                        raise RuntimeError(f"a module named {module_name} is imported but has no {attr}; "
                                           "cannot name NVIDIA's globals in the pickle")
                    found[module_name] = getattr(existing, attr)
                    continue
                found[module_name] = _placeholder(module_name, attr)
                # The import system wants every parent package too; add only the missing ones.
                parts = module_name.split(".")
                for depth in range(1, len(parts) + 1):
                    name = ".".join(parts[:depth])
                    if name not in sys.modules:
                        sys.modules[name] = types.ModuleType(name, "stand-in used while writing an NVIDIA pickle")
                        added.append(name)
                        if depth > 1 and ".".join(parts[:depth - 1]) in added:
                            setattr(sys.modules[".".join(parts[:depth - 1])], parts[depth - 1], sys.modules[name])
                setattr(sys.modules[module_name], attr, found[module_name])
            yield found[PERSISTENCE_MODULE], found[EASYDICT_MODULE]
        finally:
            for name in reversed(added):
                sys.modules.pop(name, None)


def _is_plain(value) -> bool:
    """Values the restricted loader can read back (no classes beyond numpy arrays/scalars)."""
    if value is None or isinstance(value, (bool, int, float, str, np.generic)):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "biuf"
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _cpu_tensor(tensor: torch.Tensor | None, parameter: bool):
    if tensor is None:
        return None
    # A fresh contiguous copy: a view would drag its whole base storage into the file.
    data = tensor.detach().to("cpu", torch.float32 if tensor.is_floating_point() else tensor.dtype).clone()
    return nn.Parameter(data, requires_grad=False) if parameter else data


class _NvidiaPickler(pickle.Pickler):
    def __init__(self, file, reconstruct, easydict_cls, init_kwargs: dict[int, dict]):
        super().__init__(file, protocol=PICKLE_PROTOCOL)
        self.reconstruct = reconstruct
        self.easydict_cls = easydict_cls
        self.init_kwargs = init_kwargs

    def reducer_override(self, obj):
        if isinstance(obj, nn.Module):
            return self.reconstruct, (self._meta(obj),)
        return NotImplemented

    def _kwargs(self, kwargs: dict):
        # NVIDIA passes nested constructor options as EasyDicts.
        out = {}
        for key, value in kwargs.items():
            out[key] = self.easydict_cls(self._kwargs(value)) if isinstance(value, dict) else value
        return out

    def _meta(self, module: nn.Module) -> dict:
        attrs = module.__dict__
        state = {
            "training": module.training,
            "_parameters": {k: _cpu_tensor(v, True) for k, v in module._parameters.items()},
            "_buffers": {k: _cpu_tensor(v, False) for k, v in module._buffers.items()},
            "_non_persistent_buffers_set": set(module._non_persistent_buffers_set),
            "_modules": dict(module._modules),
        }
        for name, value in attrs.items():
            if not name.startswith("_") and name not in state and name != "init_kwargs" and _is_plain(value):
                state[name] = value
        state["_init_args"] = ()
        state["_init_kwargs"] = self._kwargs(self.init_kwargs.get(id(module), {}))
        return {"type": "class", "version": PERSISTENT_VERSION, "module_src": MODULE_SRC,
                "class_name": type(module).__name__, "state": state}


def nvidia_snapshot(generator: nn.Module) -> dict:
    """The training-snapshot dict NVIDIA's tools write, with our generator as G and G_ema."""
    return {"G": generator, "D": None, "G_ema": generator, "augment_pipe": None,
            "training_set_kwargs": {"resolution": int(generator.img_resolution), "use_labels": generator.c_dim > 0}}


def dump_nvidia_pickle(generator: nn.Module, file) -> None:
    """Write `generator` as an NVIDIA network pickle to a binary file object."""
    init_kwargs = {id(generator): dict(generator.init_kwargs)}
    with _foreign_globals() as (reconstruct, easydict_cls):
        _NvidiaPickler(file, reconstruct, easydict_cls, init_kwargs).dump(nvidia_snapshot(generator))


def save_nvidia_pickle(generator: nn.Module, path) -> Path:
    """Write `generator` (ours: StyleGAN3 or StyleGAN2) as an NVIDIA-layout `.pkl`, atomically.

    The file holds weights, buffers and constructor arguments but no source code: sgtool (and any
    loader that rebuilds networks from those) reads it; NVIDIA's own `legacy.load_network_pkl`
    cannot, because it would need the embedded source.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            dump_nvidia_pickle(generator, f)
    return path
