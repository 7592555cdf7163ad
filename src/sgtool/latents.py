"""Reading latent and transform files: our per-image `.npy` arrays and stylegan3-editing's dicts.

stylegan3-editing saves dicts (file name -> values) with `np.save`, i.e. as a pickle inside the
.npy. `np.load(allow_pickle=True)` would run any code such a file carries, so object arrays are
read with a restricted unpickler that admits numpy arrays and plain containers only.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from .errors import SgtoolError
from .models.safe_pickle import NUMPY_GLOBALS, UnsafePickleError, restricted_load


def load_npy(path) -> np.ndarray | dict | list:
    """A plain array, or the object a pickled .npy holds (a dict for stylegan3-editing files)."""
    path = Path(path)
    if not path.is_file():
        raise SgtoolError(f"{path} does not exist")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            shape, fortran, dtype = np.lib.format._read_array_header(f, version)
            if not dtype.hasobject:
                f.seek(0)
                return np.load(f, allow_pickle=False)
            value = restricted_load(f, NUMPY_GLOBALS)
    except UnsafePickleError as exc:
        raise SgtoolError(f"refusing to load {path}: it references code '{exc.qualname}'") from None
    except (ValueError, TypeError, AttributeError, IndexError, KeyError, EOFError, OSError, RecursionError,
            MemoryError, pickle.UnpicklingError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SgtoolError(f"{path} is not a readable .npy file ({reason})") from None
    if isinstance(value, np.ndarray) and value.dtype.hasobject and value.shape == ():
        return value.item()
    return value


def latent_stem(path) -> str:
    """The name of a per-image latent file: 'photo_latent.npy' -> 'photo' (what `sgtool invert` named it after)."""
    return Path(path).stem.removesuffix("_latent")


def _latent_array(value, where: str) -> np.ndarray:
    """One stored latent as float32, refusing what is not a finite real array."""
    if isinstance(value, dict):
        raise SgtoolError(f"{where} is a nested dict, not a latent; give NAME_latent.npy files or a latents.npy dict "
                          "of file name -> latent (or list of per-step latents)")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        raise SgtoolError(f"{where} is not a numeric array (ragged or mixed values)") from None
    if array.dtype.kind not in "fiu":
        kind = {"c": "complex numbers", "U": "text", "S": "bytes", "O": "Python objects", "b": "booleans"}
        raise SgtoolError(f"{where} holds {kind.get(array.dtype.kind, array.dtype.name)}, not real numbers; give the "
                          "latents that sgtool invert (or stylegan3-editing) wrote")
    array = array.astype(np.float32)
    if not np.all(np.isfinite(array)):
        raise SgtoolError(f"{where} contains NaN or infinite values; invert the image again")
    return array


def load_latents(path, num_ws: int | None = None, w_dim: int | None = None, step: int = -1) -> dict[str, np.ndarray]:
    """name -> W+ latent [num_ws, w_dim] from our `NAME_latent.npy` or a stylegan3-editing dict.

    For dicts holding a list of per-step latents, `step` picks one (default: the last). Strict about
    what a latent is: real, finite, [num_ws, w_dim] (or [1, num_ws, w_dim]).
    """
    path = Path(path)
    value = load_npy(path)
    if isinstance(value, dict):
        if not value:
            raise SgtoolError(f"{path} holds an empty dict: no latents to read")
        items = {}
        for name, latent in value.items():
            where = f"{path}: entry {name!r}"
            if isinstance(latent, (list, tuple)):
                if not latent:
                    raise SgtoolError(f"{where} holds no latents")
                if not -len(latent) <= step < len(latent):
                    raise SgtoolError(f"{where} has {len(latent)} step(s); --step {step} is out of range "
                                      f"(use 0..{len(latent) - 1} or -1 for the last)")
                latent = latent[step]
            items[str(name)] = _latent_array(latent, where)
    elif isinstance(value, np.ndarray):
        items = {latent_stem(path): _latent_array(value, str(path))}
    else:
        raise SgtoolError(f"{path} holds a {type(value).__name__}, not a latent array or a dict of latents")
    for name, latent in items.items():
        if latent.ndim == 3 and latent.shape[0] == 1:
            latent = latent[0]
        if latent.ndim != 2:
            raise SgtoolError(f"{path}: latent {name!r} has shape {list(latent.shape)}, expected [num_ws, w_dim]")
        if (num_ws is not None and latent.shape[0] != num_ws) or (w_dim is not None and latent.shape[1] != w_dim):
            raise SgtoolError(f"{path}: latent {name!r} has shape {list(latent.shape)} but the generator needs "
                              f"[{num_ws}, {w_dim}]; use the generator the latents were inverted with")
        items[name] = latent
    return items
