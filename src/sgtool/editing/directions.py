"""Latent directions (InterFaceGAN boundaries, SeFa vectors, your own) and W / W+ edits.

An edit moves a W+ code along a direction: w' = w + s * d on the chosen style inputs. A
direction is a W vector ([w_dim] or [1, w_dim], the shape InterFaceGAN boundaries are released
in, broadcast to every chosen layer) or a W+ direction ([num_ws, w_dim], one row per layer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from ..errors import SgtoolError
from ..hub.cache import sgtool_home
from ..latents import load_npy
from ..utils.yaml_files import read_config_file

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"


@dataclass
class Edit:
    """`name=strength`; `direction` is filled in by `resolve_direction` ([1, w_dim] or [num_ws, w_dim])."""

    name: str
    strength: float
    direction: np.ndarray | None = None
    source: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name}{format_strength(self.strength)}"


def format_strength(value: float) -> str:
    """+2, -1, +0.5: the sign is always written so that file names sort and read unambiguously."""
    return f"{value:+g}"


def parse_edit(text: str) -> Edit:
    """'age=+2' -> Edit('age', 2.0)."""
    name, sep, value = str(text).partition("=")
    name = name.strip()
    if not sep or not name or not re.fullmatch(_NUMBER, value.strip()):
        raise SgtoolError(f"--edit expects NAME=STRENGTH such as age=+2 or smile=-1.5, got {text!r}")
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise SgtoolError(f"--edit name {name!r} may only use letters, digits, '_', '-' and '.'")
    return Edit(name, float(value))


MAX_SWEEP = 256  # strengths in one sweep: each is a grid column and an animation frame


def parse_sweep(text: str) -> tuple[str, np.ndarray]:
    """'age=-4:4:9' -> ('age', 9 evenly spaced strengths from -4 to 4, both ends included)."""
    name, sep, spec = str(text).partition("=")
    parts = spec.split(":")
    if (not sep or not name.strip() or len(parts) != 3 or not all(re.fullmatch(_NUMBER, p.strip()) for p in parts[:2])
            or not parts[2].strip().isdigit()):
        raise SgtoolError(f"--sweep expects NAME=START:STOP:COUNT such as age=-4:4:9, got {text!r}")
    count = int(parts[2])
    if not 2 <= count <= MAX_SWEEP:
        raise SgtoolError(f"--sweep {text!r}: COUNT must be between 2 and {MAX_SWEEP} (the columns of one grid)")
    return name.strip(), np.linspace(float(parts[0]), float(parts[1]), count)


def parse_named_file(text: str, what: str = "--direction") -> tuple[str, Path]:
    """'NAME=FILE' -> (NAME, Path(FILE))."""
    name, sep, path = str(text).partition("=")
    if not sep or not name.strip() or not path.strip():
        raise SgtoolError(f"{what} expects NAME=FILE, got {text!r}")
    return name.strip(), Path(path.strip()).expanduser()


def load_direction(path, w_dim: int | None = None, num_ws: int | None = None) -> np.ndarray:
    """Read a direction from `.npy` (numpy, never unpickling code) or `.pt` (torch, weights only).

    Returns float32 [1, w_dim] for a W direction or [num_ws, w_dim] for a W+ direction.
    """
    path = Path(path)
    if not path.is_file():
        raise SgtoolError(f"direction file {path} does not exist")
    if path.suffix.lower() in (".pt", ".pth"):
        try:
            value = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for foreign or unsafe files
            raise SgtoolError(f"direction file {path} is not a readable tensor file ({str(exc).splitlines()[0]})") from None
        if isinstance(value, dict) and len(value) == 1:
            value = next(iter(value.values()))
        if not isinstance(value, torch.Tensor):
            raise SgtoolError(f"direction file {path} holds a {type(value).__name__}, expected one tensor")
        array = value.detach().to(torch.float32).numpy()
    else:
        value = load_npy(path)
        if not isinstance(value, np.ndarray) or value.dtype.hasobject or not np.issubdtype(value.dtype, np.number):
            raise SgtoolError(f"direction file {path} holds a {type(value).__name__}, expected a numeric array")
        array = value.astype(np.float32)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2:
        raise SgtoolError(f"direction file {path} has shape {list(value.shape)}; expected [w_dim], [1, w_dim] "
                          "or [num_ws, w_dim]")
    if w_dim is not None and array.shape[1] != w_dim:
        raise SgtoolError(f"direction file {path} has w_dim {array.shape[1]} but the generator's is {w_dim}; "
                          "use a direction made for this generator")
    if num_ws is not None and array.shape[0] not in (1, num_ws):
        raise SgtoolError(f"direction file {path} has {array.shape[0]} rows; the generator has {num_ws} style "
                          "inputs (use one row for a W direction or one per style input)")
    if not np.all(np.isfinite(array)):
        raise SgtoolError(f"direction file {path} contains NaN or infinite values")
    return array


DIRECTION_SETS_FILE = Path(__file__).resolve().parents[1] / "configs" / "directions.yaml"


def load_direction_sets(path=DIRECTION_SETS_FILE) -> dict:
    """The registry file: set name -> {"source": text, "files": {name: file}, "hub": {name: registry name}}."""
    sets = read_config_file(path, "directions registry")
    for name, entry in sets.items():
        if (not isinstance(entry, dict) or set(entry) - {"source", "files", "hub"}
                or not isinstance(entry.get("files"), dict) or not isinstance(entry.get("hub", {}), dict)):
            raise SgtoolError(f"directions registry {path}: set {name!r} must hold 'files' (name: file), optionally "
                              "'hub' (name: model registry name) and 'source'")
    return sets


@dataclass
class DirectionRegistry:
    """Names -> files per generator family (`configs/directions.yaml`).

    `sets` maps a set name such as "stylegan3-ffhq" to {"source": where the files come from,
    "files": {name: relative path}, "hub": {name: model-registry name}}; files resolve against
    `folder`; a name whose file is not there but that has a hub entry is fetched into sgtool's
    model cache (`sgtool models`), or named with where to put it when offline. `choice` names a
    set, or is "auto" (by the generator, see `set_for`).
    """

    sets: dict
    folder: Path = field(default_factory=lambda: sgtool_home() / "directions")
    choice: str = "auto"

    def __post_init__(self):
        if self.choice != "auto" and self.choice not in self.sets:
            raise SgtoolError(f"direction_set {self.choice!r} is not in the registry; known sets: "
                              f"{', '.join(self.sets) or 'none'}")

    @classmethod
    def from_settings(cls, options) -> "DirectionRegistry":
        """The shipped registry, with the folder and set that `options` (an EditOptions) choose."""
        folder = Path(options.directions_dir).expanduser() if options.directions_dir else sgtool_home() / "directions"
        return cls(sets=load_direction_sets(), folder=folder, choice=options.direction_set)

    def set_for(self, generator, hint: str = "") -> str | None:
        """The set matching the generator: an explicit choice, else by kind and by a dataset name in `hint`.

        `hint` is the network's file name (plus a tuned generator's recorded source); "ffhqu" in it
        picks the unaligned-FFHQ set, otherwise the first set listed for the generator's kind.
        """
        if self.choice != "auto":
            return self.choice
        kind = getattr(generator, "kind", "")
        candidates = [name for name in self.sets if name.startswith(kind + "-")]
        hint = hint.lower()
        by_token = sorted((name for name in candidates if name[len(kind) + 1:].lower() in hint),
                          key=lambda name: -len(name))
        if by_token:
            return by_token[0]
        return candidates[0] if candidates else None

    def known(self, set_name: str | None, extra: dict | None = None) -> list[str]:
        names = list((self.sets.get(set_name) or {}).get("files", {})) if set_name else []
        return sorted(set(names) | set(extra or {}), key=str.lower)


def generator_hint(network, generator) -> str:
    """Text that names what a generator was trained on: its path and, for tuned files, its source."""
    extra = getattr(generator, "extra_metadata", None) or {}
    return " ".join([Path(str(network)).name] + [str(v) for v in extra.values() if isinstance(v, str)])


def resolve_direction(name: str, generator, registry: DirectionRegistry, extra: dict | None = None,
                      hint: str = "") -> tuple[np.ndarray, Path]:
    """The direction array and its file for `name`: `extra` (NAME -> FILE from --direction) wins over
    the registry set that matches `generator`. Unknown names list the known ones."""
    extra = extra or {}
    if name in extra:
        path = Path(extra[name])
    else:
        set_name = registry.set_for(generator, hint)
        entry = (registry.sets.get(set_name) or {}) if set_name else {}
        files = entry.get("files") or {}
        if name not in files:
            known = registry.known(set_name, extra)
            where = f" for {set_name}" if set_name else ""
            raise SgtoolError(f"unknown direction {name!r}{where}; known: {', '.join(known) or 'none'} "
                              f"(add one with --direction {name}=FILE.npy)")
        path = Path(files[name]).expanduser()
        if not path.is_absolute():
            path = registry.folder / path
        hub_name = (entry.get("hub") or {}).get(name)
        if not path.is_file() and hub_name:
            from ..hub import resolve_checkpoint

            path = resolve_checkpoint(hub_name, kind="direction")
        elif not path.is_file():
            source = entry.get("source", "")
            raise SgtoolError(f"direction {name!r} ({set_name}) needs {path}: put the file there"
                              f"{f' (from {source})' if source else ''}, set directions_dir, or pass "
                              f"--direction {name}=FILE")
    return load_direction(path, generator.w_dim, generator.num_ws), path


def layer_mask(num_ws: int, layers: Sequence[int] | None) -> torch.Tensor:
    """[num_ws, 1] float mask of the style inputs an edit touches (all when `layers` is None)."""
    mask = torch.zeros(num_ws, 1)
    if layers is None:
        mask[:] = 1
        return mask
    bad = [i for i in layers if not 0 <= i < num_ws]
    if bad:
        raise SgtoolError(f"--layers {bad[0]} is out of range: this generator has style inputs 0-{num_ws - 1}")
    mask[list(layers)] = 1
    return mask


def apply_edits(ws, edits: Iterable[Edit], layers: Sequence[int] | None = None, mode: str = "auto"):
    """w' = w + sum_k s_k d_k on the style inputs in `layers` (all by default); the rest stay bit-identical.

    `ws` is [num_ws, w_dim] or [N, num_ws, w_dim] (tensor or array; the result has the same type).
    `mode` "w" requires W directions (broadcast to the chosen layers), "wplus" W+ directions,
    "auto" accepts both.
    """
    as_numpy = isinstance(ws, np.ndarray)
    out = torch.from_numpy(ws) if as_numpy else ws
    squeeze = out.ndim == 2
    if squeeze:
        out = out.unsqueeze(0)
    num_ws = out.shape[1]
    mask = layer_mask(num_ws, layers).to(out.device, out.dtype)
    total = torch.zeros(out.shape[1:], dtype=out.dtype, device=out.device)
    touched = False
    for edit in edits:
        if edit.direction is None:
            raise ValueError(f"edit {edit.name!r} has no direction; call resolve_direction first")
        direction = torch.as_tensor(edit.direction, dtype=out.dtype, device=out.device)
        rows = direction.shape[0]
        if mode == "w" and rows != 1:
            raise SgtoolError(f"--mode w needs a W direction ([w_dim] or [1, w_dim]); {edit.source or edit.name} "
                              f"has {rows} rows (use --mode wplus)")
        if mode == "wplus" and rows != num_ws:
            raise SgtoolError(f"--mode wplus needs a W+ direction [{num_ws}, w_dim]; {edit.source or edit.name} "
                              f"has {rows} row(s) (use --mode w)")
        if rows not in (1, num_ws):
            raise SgtoolError(f"direction {edit.source or edit.name} has {rows} rows; the generator has {num_ws}")
        if edit.strength != 0:
            total = total + float(edit.strength) * direction.expand(num_ws, -1)
            touched = True
    if touched:
        delta = (total * mask).unsqueeze(0)
        keep = mask.bool().expand(num_ws, out.shape[2]).unsqueeze(0)
        # torch.where keeps untouched layers exactly as they were (no +0.0 rounding games).
        out = torch.where(keep, out + delta, out)
    if squeeze:
        out = out[0]
    return out.numpy() if as_numpy else out


def edit_label(edits: Sequence, separator: str = "_") -> str:
    """'age+2_smile-1' for the file names of an edited output."""
    return separator.join(edit.label for edit in edits)
