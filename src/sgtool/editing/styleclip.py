"""StyleCLIP global directions (Patashnik et al.) on the references' direction files.

A text edit is a direction in StyleSpace: `delta_i_c` (one unit CLIP image-space vector per S
channel: how moving that channel changes the CLIP embedding) is projected on the text direction
`delta_i` (CLIP text features of target minus neutral prompt); channels whose |projection| is
below `beta` are dropped, the rest are scaled by the largest kept one and by the channel's std.
The edit adds alpha times that direction to S (`editing.stylespace`).

File layouts (the references read and write these; `save_s_stats` writes them too):
- StyleGAN3 (stylegan3-editing): `s_stats` = pickle `[pose, s_mean, s_std]` (pose a dict of numpy
  floats theta, x, y; the others dicts layer name -> float32 [C]); `delta_i_c.npy` [all S
  channels, 512], rows in S order.
- StyleGAN2 (StyleCLIP, HyperStyle): `S_mean_std` = pickle `[s_mean, s_std]` (lists over the S
  layers in order: conv1 and torgb at 4 px, then conv0, conv1, torgb per block); `fs3.npy` rows
  cover the non-torgb layers in order, possibly only the first ones (StyleCLIP's stop at 128 px);
  the torgb and uncovered layers get no direction.
Pickles are read with a restricted unpickler (numpy arrays and plain containers only).
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from ..errors import SgtoolError
from ..latents import load_npy
from ..models.safe_pickle import NUMPY_GLOBALS, UnsafePickleError, restricted_load
from ..utils.io import atomic_path, save_npy
from .directions import _NUMBER
from .stylespace import StyleDict, StyleStatistics, style_layers

# Official file names per generator kind: (directions, statistics).
FILE_NAMES = {"stylegan3": ("delta_i_c.npy", "s_stats"), "stylegan2": ("fs3.npy", "S_mean_std")}
FACE_STRENGTH, OTHER_STRENGTH = 5.0, 10.0  # the references' manipulation strength (x std) per domain
FACE_HINTS = ("ffhq", "celeba", "metfaces", "face", "human")


def stylegan2_layer_names(count: int) -> list[str]:
    """sgtool's names of StyleGAN2's S layers from their count alone (3 per block less the 4 px conv0)."""
    if count < 2 or (count + 1) % 3:
        raise SgtoolError(f"{count} S layers is not a StyleGAN2 StyleSpace (2 at 4 px, then 3 per block)")
    names = ["b4.conv1", "b4.torgb"]
    for block in range((count - 2) // 3):
        names += [f"b{2 ** (block + 3)}.{part}" for part in ("conv0", "conv1", "torgb")]
    return names


def _float_vector(value, what: str) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.ndim != 1 or not np.issubdtype(value.dtype, np.floating):
        raise SgtoolError(f"{what} must be a 1-D float array, got {type(value).__name__}")
    if not np.all(np.isfinite(value)):
        raise SgtoolError(f"{what} contains NaN or infinite values")
    return value.astype(np.float32)


def _finite_real(value) -> bool:
    """A real, finite number (a NumPy or Python scalar; not text, complex or bool)."""
    if np.ndim(value) != 0 or isinstance(value, (bool, np.bool_, str, bytes)):
        return False
    if not np.issubdtype(np.asarray(value).dtype, np.number) or np.iscomplexobj(value):
        return False
    return bool(np.isfinite(value))


def load_s_stats(path) -> StyleStatistics:
    """(pose, s_mean, s_std) from stylegan3-editing's `s_stats` or StyleCLIP's `S_mean_std` (pose None), without
    running any code a pickle may carry."""
    path = Path(path)
    if not path.is_file():
        raise SgtoolError(f"S statistics file {path} does not exist")
    try:
        with open(path, "rb") as f:
            value = restricted_load(f, NUMPY_GLOBALS)
    except UnsafePickleError as exc:
        raise SgtoolError(f"refusing to load {path}: it references code '{exc.qualname}'") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise SgtoolError(f"{path} is not a readable S statistics pickle ({exc})") from None
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(v, dict) for v in value):
        pose, mean, std = value
        if set(pose) != {"theta", "x", "y"} or not all(_finite_real(v) for v in pose.values()):
            raise SgtoolError(f"{path}: the pose entry must hold the finite numbers theta, x and y")
        if list(mean) != list(std):
            raise SgtoolError(f"{path}: s_mean and s_std name different layers")
        mean = {str(k): _float_vector(v, f"{path} s_mean[{k!r}]") for k, v in mean.items()}
        std = {str(k): _float_vector(v, f"{path} s_std[{k!r}]") for k, v in std.items()}
        return StyleStatistics({k: float(v) for k, v in pose.items()}, mean, std)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (list, tuple)) for v in value):
        means, stds = value
        if len(means) != len(stds):
            raise SgtoolError(f"{path}: s_mean has {len(means)} layers but s_std {len(stds)}")
        names = stylegan2_layer_names(len(means))
        mean = {n: _float_vector(v, f"{path} s_mean[{i}]") for i, (n, v) in enumerate(zip(names, means))}
        std = {n: _float_vector(v, f"{path} s_std[{i}]") for i, (n, v) in enumerate(zip(names, stds))}
        return StyleStatistics(None, mean, std)
    raise SgtoolError(f"{path} is neither stylegan3-editing's s_stats ([pose, s_mean, s_std]) nor StyleCLIP's "
                      "S_mean_std ([s_mean, s_std])")


def save_s_stats(path, stats: StyleStatistics) -> Path:
    """Write `stats` in the layout the references read: s_stats for StyleGAN3 (pose given), else S_mean_std."""
    if stats.pose is not None:
        payload = [{k: np.float32(v) for k, v in stats.pose.items()}, dict(stats.mean), dict(stats.std)]
    else:
        stylegan2_layer_names(len(stats.mean))
        payload = [list(stats.mean.values()), list(stats.std.values())]
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump(payload, f)
    return Path(path)


def check_s_stats(stats: StyleStatistics, generator, source: str) -> None:
    """The statistics must describe this generator's StyleSpace: same layers, same channel counts."""
    layers = style_layers(generator)
    expected = [(layer.name, layer.channels) for layer in layers]
    found = [(name, len(values)) for name, values in stats.std.items()]
    if found != expected or (stats.pose is None) != (generator.kind != "stylegan3"):
        differ = [f"{e[0]}:{e[1]} here, {f[0]}:{f[1]} there" for e, f in zip(expected, found) if e != f]
        detail = differ[0] if differ else f"{len(expected)} layers here, {len(found)} there"
        raise SgtoolError(f"{source} was made for another generator ({detail}); use the direction files made for "
                          "this network or build them with `sgtool directions styleclip`")


def direction_layers(s_std: Mapping[str, object], rows: int) -> list[str]:
    """The S layers `rows` delta_i_c rows stand for: every layer (stylegan3-editing) or, for StyleGAN2, the
    non-torgb layers from the first (StyleCLIP's fs3)."""
    widths = {name: len(values) for name, values in s_std.items()}
    if rows == sum(widths.values()):
        return list(widths)
    if not any(name.endswith(".torgb") for name in widths):  # only StyleGAN2 files leave layers out
        raise SgtoolError(f"delta_i_c has {rows} rows but this StyleSpace has {sum(widths.values())} channels")
    covered, total = [], 0
    for name, width in widths.items():
        if name.endswith(".torgb") or total >= rows:
            continue
        covered.append(name)
        total += width
    if total != rows:
        raise SgtoolError(f"delta_i_c has {rows} rows: not a whole number of StyleGAN2 conv layers "
                          f"({', '.join(f'{n}:{w}' for n, w in widths.items() if not n.endswith('.torgb'))})")
    return covered


def load_delta_i_c(path, s_std: Mapping[str, object] | None = None) -> np.ndarray:
    """delta_i_c / fs3 as float32 [rows, clip_dim] (read without unpickling); rows checked against `s_std`."""
    value = load_npy(path)
    if not isinstance(value, np.ndarray) or value.ndim != 2 or not np.issubdtype(value.dtype, np.floating):
        raise SgtoolError(f"{path} is not a delta_i_c array (2-D floats: S channels x CLIP features)")
    if not np.all(np.isfinite(value)):
        raise SgtoolError(f"{path} contains NaN or infinite values")
    if s_std is not None:
        try:
            direction_layers(s_std, value.shape[0])
        except SgtoolError as exc:
            raise SgtoolError(f"{path}: {exc}") from None
    return value.astype(np.float32)


def global_direction(delta_i_c, delta_i, s_std: Mapping[str, object], beta: float) -> StyleDict:
    """The StyleSpace direction of text direction `delta_i` (unit, [clip_dim]) at disentanglement threshold
    `beta`: a dict like S, [1, C] per layer (zero where no channel is kept)."""
    delta_i_c = torch.as_tensor(delta_i_c, dtype=torch.float32)
    delta_i = torch.as_tensor(delta_i, dtype=torch.float32, device=delta_i_c.device).reshape(-1)
    if delta_i_c.ndim != 2 or delta_i_c.shape[1] != delta_i.shape[0]:
        raise SgtoolError(f"delta_i_c has shape {list(delta_i_c.shape)} but the text direction has "
                          f"{delta_i.shape[0]} features: use directions built with the same CLIP model")
    relevance = delta_i_c @ delta_i
    kept = torch.where(relevance.abs() < beta, torch.zeros_like(relevance), relevance)
    largest = kept.abs().max()
    if largest > 0:
        kept = kept / largest
    covered = set(direction_layers(s_std, delta_i_c.shape[0]))
    direction, start = {}, 0
    for name, std in s_std.items():
        std = torch.as_tensor(np.asarray(std), dtype=torch.float32, device=delta_i_c.device)
        if name in covered:
            direction[name] = (kept[start:start + len(std)] * std).unsqueeze(0)
            start += len(std)
        else:
            direction[name] = torch.zeros(1, len(std), device=delta_i_c.device)
    return direction


def kept_channels(direction: StyleDict) -> int:
    return int(sum(int((values != 0).sum()) for values in direction.values()))


def apply_direction(styles: Mapping[str, torch.Tensor], direction: Mapping[str, torch.Tensor],
                    alpha: float) -> StyleDict:
    """S + alpha x direction, layer by layer (S batch [N, C], direction [1, C])."""
    return {name: values + alpha * direction[name].to(values.device, values.dtype) for name, values in styles.items()}


@dataclass(frozen=True)
class TextEdit:
    """`--text "a smiling face"=3`: a target prompt and its own strength (None: the run's --alpha)."""

    prompt: str
    alpha: float | None = None

    @property
    def label(self) -> str:
        """'a_smiling_face+3' for output names."""
        slug = re.sub(r"[^A-Za-z0-9]+", "_", self.prompt).strip("_")[:40] or "text"
        return slug if self.alpha is None else f"{slug}{self.alpha:+g}"


def parse_text_edit(text: str) -> TextEdit:
    """'a smiling face' or 'a smiling face=3' (the last '=' followed by a number sets the strength)."""
    prompt, sep, value = str(text).rpartition("=")
    alpha = None
    if sep and re.fullmatch(_NUMBER, value.strip()):
        alpha = float(value)
        if not abs(alpha) <= 100:  # --alpha's range (NaN, 1e39 and overflow included)
            raise SgtoolError(f"--text {text!r}: the strength must lie between -100 and 100")
    else:
        prompt = str(text)
    if not prompt.strip():
        raise SgtoolError(f"--text expects a prompt such as \"a smiling face\" or \"a smiling face\"=3, got {text!r}")
    return TextEdit(prompt.strip(), alpha)


# --- which files ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DirectionFiles:
    """A delta_i_c file and the S statistics it goes with."""

    delta_i_c: Path
    s_stats: Path


def files_in(folder, kind: str) -> DirectionFiles:
    """The official pair in a folder (`--directions DIR`): delta_i_c.npy + s_stats (StyleGAN3) or fs3.npy +
    S_mean_std (StyleGAN2)."""
    folder = Path(folder).expanduser()
    wanted = FILE_NAMES[kind]
    if not folder.is_dir():
        raise SgtoolError(f"--directions {folder} is not a folder (it should hold {' and '.join(wanted)})")
    if all((folder / name).is_file() for name in wanted):
        return DirectionFiles(folder / wanted[0], folder / wanted[1])
    other = next((k for k, names in FILE_NAMES.items() if k != kind and all((folder / n).is_file() for n in names)),
                 None)
    found = f"; it holds {' + '.join(FILE_NAMES[other])}, which are for {other}" if other else ""
    raise SgtoolError(f"--directions {folder} needs {' + '.join(wanted)} for this {kind} generator{found}; "
                      "build them with `sgtool directions styleclip -n GENERATOR -o DIR`")


@dataclass(frozen=True)
class KnownDirections:
    """The registry pair made for one published generator, and how to recognise that generator."""

    delta_i_c: str  # registry names
    s_stats: str
    config: str  # generator.config_name
    resolution: int
    token: str  # in the generator's file name (or a tuned generator's recorded source)
    unless: str = ""  # ... and this is not


KNOWN_DIRECTIONS = (
    KnownDirections("styleclip-sg3-r-ffhqu-1024-delta-i-c", "styleclip-sg3-r-ffhqu-1024-s-stats", "stylegan3-r",
                    1024, "ffhqu"),
    KnownDirections("styleclip-sg3-r-ffhq-1024-delta-i-c", "styleclip-sg3-r-ffhq-1024-s-stats", "stylegan3-r",
                    1024, "ffhq", unless="ffhqu"),
    KnownDirections("styleclip-sg3-r-afhq-512-delta-i-c", "styleclip-sg3-r-afhq-512-s-stats", "stylegan3-r",
                    512, "afhq"),
    KnownDirections("styleclip-sg3-t-landscape-256-delta-i-c", "styleclip-sg3-t-landscape-256-s-stats",
                    "stylegan3-t", 256, "landscape"),
    KnownDirections("styleclip-sg2-ffhq-1024-fs3", "styleclip-sg2-ffhq-1024-s-mean-std", "stylegan2-skip", 1024,
                    "ffhq", unless="ffhqu"),
)


def known_directions(generator, hint: str) -> KnownDirections | None:
    """The published pair for this generator, recognised by its architecture, resolution and a dataset name in
    `hint` (`editing.directions.generator_hint`); None for any other generator (build its own)."""
    hint = hint.lower()
    for known in KNOWN_DIRECTIONS:
        if (generator.config_name == known.config and generator.img_resolution == known.resolution
                and known.token in hint and not (known.unless and known.unless in hint)):
            return known
    return None


def direction_files(generator, hint: str = "", folder=None) -> DirectionFiles:
    """The pair a text edit uses: `folder`'s (`--directions DIR`), else the published pair for this generator
    (`known_directions`), fetched through the model registry's cache (offline: one line naming the file, the
    registry name and where to put it)."""
    if folder is not None:
        return files_in(folder, generator.kind)
    known = known_directions(generator, hint)
    if known is None:
        raise SgtoolError("no published StyleCLIP directions for this generator (known: StyleGAN3-R FFHQ/FFHQ-U "
                          "1024, AFHQ 512, StyleGAN3-T landscapes 256, StyleGAN2 FFHQ 1024); build them with "
                          "`sgtool directions styleclip -n GENERATOR -o DIR` and pass --directions DIR")
    from ..hub import resolve_checkpoint

    return DirectionFiles(resolve_checkpoint(known.delta_i_c, kind="styleclip"),
                          resolve_checkpoint(known.s_stats, kind="styleclip"))


@dataclass(frozen=True)
class GlobalDirections:
    """One generator's delta_i_c and S statistics, checked against it: text direction -> StyleSpace direction."""

    delta_i_c: np.ndarray
    stats: StyleStatistics
    files: DirectionFiles

    @classmethod
    def load(cls, files: DirectionFiles, generator) -> "GlobalDirections":
        stats = load_s_stats(files.s_stats)
        check_s_stats(stats, generator, str(files.s_stats))
        return cls(load_delta_i_c(files.delta_i_c, stats.std), stats, files)

    def direction(self, delta_i, beta: float) -> StyleDict:
        return global_direction(self.delta_i_c, delta_i, self.stats.std, beta)


def default_strength(hint: str) -> float:
    """The references' channel move for building directions: 5 std for faces, 10 for other domains."""
    return FACE_STRENGTH if any(token in hint.lower() for token in FACE_HINTS) else OTHER_STRENGTH


def save_delta_i_c(path, rows: np.ndarray) -> Path:
    return save_npy(np.asarray(rows, dtype=np.float32), path)
