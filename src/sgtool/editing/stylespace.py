"""StyleSpace S in the references' convention, so that S values, channel numbers and direction files
can be exchanged with stylegan3-editing (StyleGAN3) and StyleCLIP/HyperStyle (StyleGAN2).

S is a dict layer name -> [N, channels], in the order the synthesis network uses the layers:
- StyleGAN3 (stylegan3-editing's `W2S`): "input" first, the input affine's (r_c, r_s, t_x, t_y)
  divided by the norm of (r_c, r_s); then each layer `L{i}_{size}_{channels}`'s affine output,
  the to-RGB one times its weight gain 1/sqrt(in_channels * k^2). The network defines these
  values (`layer.styles(w)`) and renders from them (`synthesis(None, styles=S)`), so an S taken
  from W+ renders exactly what W+ renders; an edited input rotation is used as given.
- StyleGAN2 (StyleCLIP's `W2S`, HyperStyle's rosinality style vector): per block conv0 (absent at
  4 px), conv1 and torgb, each the raw affine output (to-RGB before its weight gain). A block's
  torgb reads the same w as the next block's first conv. Rendering substitutes S for the affine
  outputs through forward hooks.

`style_layers` lists the layers; `w_to_s` / `render_s` are the dict API; `capture_styles`,
`render_styles`, `apply_style_edits` and `style_std` are the same in list form (index = layer).
S files: `save_s` writes an .npz keyed by layer name with a convention marker; `load_s` also reads
stylegan3-editing's pickled S dicts and refuses sgtool's old raw-affine files.
"""

from __future__ import annotations

import contextlib
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from ..errors import SgtoolError
from ..models.safe_pickle import NUMPY_GLOBALS, UnsafePickleError, restricted_load
from ..progress import SILENT, Reporter
from ..utils.io import atomic_path

StyleDict = dict  # layer name -> tensor [N, channels], in `style_layers` order

# What each family's S values follow (written into S files and checked on reading them).
CONVENTIONS = {"stylegan3": "stylegan3-editing W2S", "stylegan2": "StyleCLIP W2S"}
CONVENTION_KEY = "__convention__"

# The references' sampling for S statistics (stylegan3-editing's s_statistics.py).
STATS_PSI = 0.5
STATS_CUTOFF = 8


@dataclass(frozen=True)
class StyleLayer:
    index: int
    name: str
    module: torch.nn.Module  # the affine FullyConnectedLayer
    w_index: int  # which style input (row of W+) feeds it
    is_torgb: bool
    is_geometry: bool = False  # StyleGAN3's input affine: rotation/translation, not channel scales

    @property
    def channels(self) -> int:
        return self.module.out_features


def style_layers(generator) -> list[StyleLayer]:
    synthesis = generator.synthesis
    layers: list[StyleLayer] = []
    if generator.kind == "stylegan3":
        layers.append(StyleLayer(0, "input", synthesis.input.affine, 0, False, True))
        for i, name in enumerate(synthesis.layer_names):
            layer = getattr(synthesis, name)
            layers.append(StyleLayer(len(layers), name, layer.affine, i + 1, bool(layer.is_torgb)))
        return layers
    w_index = 0
    for res in synthesis.block_resolutions:
        block = getattr(synthesis, f"b{res}")
        index = w_index
        for conv in ("conv0", "conv1"):
            if hasattr(block, conv):
                layers.append(StyleLayer(len(layers), f"b{res}.{conv}", getattr(block, conv).affine, index, False))
                index += 1
        if hasattr(block, "torgb"):
            layers.append(StyleLayer(len(layers), f"b{res}.torgb", block.torgb.affine, w_index + block.num_conv, True))
        w_index += block.num_conv
    return layers


def _styles_of(generator, layer: StyleLayer, w: torch.Tensor) -> torch.Tensor:
    if generator.kind != "stylegan3":
        return layer.module(w)
    synthesis = generator.synthesis
    owner = synthesis.input if layer.is_geometry else getattr(synthesis, layer.name)
    return owner.styles(w)


@torch.no_grad()
def w_to_s(generator, ws: torch.Tensor) -> StyleDict:
    """W+ codes [N, num_ws, w_dim] -> S (dict layer name -> [N, channels]), the references' convention."""
    if ws.ndim != 3 or ws.shape[1:] != (generator.num_ws, generator.w_dim):
        raise SgtoolError(f"W+ codes must have shape [N, {generator.num_ws}, {generator.w_dim}], "
                          f"got {list(ws.shape)}")
    ws = ws.to(next(generator.parameters()).device, torch.float32)
    return {layer.name: _styles_of(generator, layer, ws[:, layer.w_index]) for layer in style_layers(generator)}


def check_s(generator, styles: Mapping[str, torch.Tensor], what: str = "S") -> int:
    """The batch size of `styles` after checking its layer names and shapes against the generator."""
    layers = style_layers(generator)
    missing = [layer.name for layer in layers if layer.name not in styles]
    extra = [name for name in styles if name not in {layer.name for layer in layers}]
    if missing or extra:
        raise SgtoolError(f"{what} does not match this generator's StyleSpace: "
                          + "; ".join(filter(None, [f"missing {', '.join(missing)}" if missing else "",
                                                    f"unknown {', '.join(extra)}" if extra else ""])))
    batch = styles[layers[0].name].shape[0]
    for layer in layers:
        shape = tuple(styles[layer.name].shape)
        if shape != (batch, layer.channels):
            raise SgtoolError(f"{what} layer {layer.name} needs shape [{batch}, {layer.channels}], got {list(shape)}")
    return batch


@contextlib.contextmanager
def _substituted_affines(layers: Sequence[StyleLayer], styles: Mapping[str, torch.Tensor]) -> Iterator[None]:
    def hook_for(layer):
        def hook(module, inputs, output):
            return styles[layer.name].to(output.device, output.dtype)
        return hook

    handles = [layer.module.register_forward_hook(hook_for(layer)) for layer in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _transform_kwargs(generator, transform) -> dict:
    if transform is None:
        return {}
    if generator.kind != "stylegan3":
        raise SgtoolError("a landmarks transform needs a StyleGAN3 network (StyleGAN2 has no input transform); "
                          "render StyleGAN2 codes without one (the aligned view)")
    return {"transform": torch.as_tensor(transform, dtype=torch.float32)}


@torch.no_grad()
def render_s(generator, styles: Mapping[str, torch.Tensor], transform=None, noise_mode: str = "const"):
    """Synthesis from S alone; `transform` ([3, 3] or [N, 3, 3]) as `synthesis.input.transform` (StyleGAN3)."""
    return synthesize_s(generator, styles, transform, noise_mode)


def synthesize_s(generator, styles: Mapping[str, torch.Tensor], transform=None, noise_mode: str = "const",
                 **synthesis_kwargs):
    """`render_s` with gradients (when enabled) to the generator's weights: tuning around an S code.
    `synthesis_kwargs` go to the synthesis network (`stop_at` / `replace` of feature-space edits)."""
    batch = check_s(generator, styles)
    device = next(generator.parameters()).device
    styles = {name: torch.as_tensor(value).to(device, torch.float32) for name, value in styles.items()}
    kwargs = {**_transform_kwargs(generator, transform), **synthesis_kwargs}
    if generator.kind == "stylegan3":
        return generator.synthesis(None, noise_mode=noise_mode, styles=styles, **kwargs)
    # The ws only reach the network through the affines, whose outputs the hooks replace.
    placeholder = torch.zeros([batch, generator.num_ws, generator.w_dim], device=device)
    with _substituted_affines(style_layers(generator), styles):
        return generator.synthesis(placeholder, noise_mode=noise_mode, **kwargs)


def as_list(generator, styles: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    return [styles[layer.name] for layer in style_layers(generator)]


def as_dict(generator, styles: Sequence[torch.Tensor]) -> StyleDict:
    layers = style_layers(generator)
    if len(styles) != len(layers):
        raise SgtoolError(f"got {len(styles)} style layers; this generator has {len(layers)}")
    return {layer.name: style for layer, style in zip(layers, styles)}


@torch.no_grad()
def capture_styles(generator, ws: torch.Tensor, transform=None, noise_mode: str = "const"):
    """(S as a list in `style_layers` order, the W+ render of ws)."""
    images = generator.synthesis(ws, noise_mode=noise_mode, **_transform_kwargs(generator, transform))
    return as_list(generator, w_to_s(generator, ws)), images


def render_styles(generator, styles: Sequence[torch.Tensor], transform=None, noise_mode: str = "const"):
    """`render_s` for S as a list in `style_layers` order."""
    return render_s(generator, as_dict(generator, styles), transform, noise_mode)


@dataclass
class StyleEdit:
    layer: str  # index or name as typed
    channel: int
    strength: float
    index: int | None = None  # resolved S layer index

    @property
    def label(self) -> str:
        return f"s{self.index if self.index is not None else self.layer}c{self.channel}{self.strength:+g}"


def parse_style(text: str) -> StyleEdit:
    """'3:12=+5' or 'L3_36_32:12=+5' or 'b16.conv1:7=-2' -> StyleEdit."""
    m = re.fullmatch(r"\s*([^:=\s]+):(\d+)\s*=\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*", str(text))
    if not m:
        raise SgtoolError(f"--style expects LAYER:CHANNEL=STRENGTH such as 3:12=+5 or L3_36_32:12=+5, got {text!r}")
    return StyleEdit(m.group(1), int(m.group(2)), float(m.group(3)))


def resolve_style_edit(edit: StyleEdit, layers: Sequence[StyleLayer]) -> StyleEdit:
    names = {layer.name: layer.index for layer in layers}
    if edit.layer.isdigit():
        index = int(edit.layer)
        if index >= len(layers):
            raise SgtoolError(f"--style layer {index} is out of range: S layers are 0-{len(layers) - 1} "
                              f"({', '.join(names)})")
    elif edit.layer in names:
        index = names[edit.layer]
    else:
        raise SgtoolError(f"unknown style layer {edit.layer!r}; known: {', '.join(names)} (or 0-{len(layers) - 1})")
    if not 0 <= edit.channel < layers[index].channels:
        raise SgtoolError(f"--style channel {edit.channel} is out of range: layer {layers[index].name} has channels "
                          f"0-{layers[index].channels - 1}")
    return StyleEdit(edit.layer, edit.channel, edit.strength, index)


def apply_style_edits(styles: Sequence[torch.Tensor], edits: Sequence[StyleEdit],
                      scale: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Add strength (times `scale[layer][channel]` when given, e.g. the channel's std) to S channels.

    Untouched layers are returned as the same tensors, so a zero edit changes nothing.
    """
    out = list(styles)
    for edit in edits:
        if edit.index is None:
            raise ValueError("resolve the style edit against the generator's layers first")
        if edit.strength == 0:
            continue
        step = edit.strength * (float(scale[edit.index][edit.channel]) if scale is not None else 1.0)
        layer = out[edit.index].clone()
        layer[:, edit.channel] += step
        out[edit.index] = layer
    return out


class StyleStatistics(NamedTuple):
    """The references' s_stats: `pose` (StyleGAN3: mean input rotation theta and translation x, y; None for
    StyleGAN2), per-layer channel `mean` and `std` (dicts layer name -> float32 [channels])."""

    pose: dict | None
    mean: dict
    std: dict


def sample_ws(generator, count: int, seed: int = 0, truncation_psi: float = STATS_PSI,
              truncation_cutoff: int | None = STATS_CUTOFF, chunk: int = 2000) -> Iterator[torch.Tensor]:
    """W+ codes of `np.random.RandomState(seed).randn(count, z_dim)` mapped with truncation, in chunks: the
    references' sample stream (its first n samples are the same whatever `count`)."""
    rng = np.random.RandomState(seed)
    device = next(generator.parameters()).device
    for start in range(0, count, chunk):
        size = min(chunk, count - start)
        z = torch.from_numpy(rng.randn(size, generator.z_dim).astype(np.float32)).to(device)
        c = torch.zeros([size, generator.c_dim], device=device) if generator.c_dim else None
        with torch.no_grad():
            yield generator.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)


@torch.no_grad()
def s_statistics(generator, num_samples: int, seed: int = 0, truncation_psi: float = STATS_PSI,
                 truncation_cutoff: int | None = STATS_CUTOFF, chunk: int = 2000,
                 reporter: Reporter = SILENT) -> StyleStatistics:
    """The references' recipe: S of `num_samples` mapped z (RandomState(seed), psi 0.5, cutoff 8), per-channel
    mean and (population) std; for StyleGAN3 also the mean input pose."""
    if num_samples < 2:
        raise SgtoolError(f"S statistics need at least 2 samples, got {num_samples}")
    layers = style_layers(generator)
    sums = {layer.name: torch.zeros(layer.channels, dtype=torch.float64) for layer in layers}
    squares = {name: torch.zeros_like(total) for name, total in sums.items()}
    theta = translate_x = translate_y = 0.0
    reporter.start("S statistics", total=num_samples)
    for ws in sample_ws(generator, num_samples, seed, truncation_psi, truncation_cutoff, chunk):
        for name, values in w_to_s(generator, ws).items():
            values = values.cpu().to(torch.float64)
            sums[name] += values.sum(0)
            squares[name] += values.square().sum(0)
            if name == "input" and generator.kind == "stylegan3":
                theta += float(torch.arccos(values[:, 0]).sum())
                translate_x += float(values[:, 2].sum())
                translate_y += float(values[:, 3].sum())
        reporter.advance(ws.shape[0])
    reporter.finish()
    mean = {name: total / num_samples for name, total in sums.items()}
    std = {name: (squares[name] / num_samples - mean[name].square()).clamp_min(0).sqrt() for name in sums}
    pose = None
    if generator.kind == "stylegan3":
        pose = {"theta": np.float32(theta / num_samples), "x": np.float32(translate_x / num_samples),
                "y": np.float32(translate_y / num_samples)}
    return StyleStatistics(pose, {k: v.numpy().astype(np.float32) for k, v in mean.items()},
                           {k: v.numpy().astype(np.float32) for k, v in std.items()})


def style_std(generator, num_samples: int = 2000, seed: int = 0) -> list[torch.Tensor]:
    """Per-channel std of each S layer (the StyleSpace unit of `--style` edits), in `style_layers` order, by the
    references' recipe (see `s_statistics`)."""
    stats = s_statistics(generator, num_samples, seed)
    return [torch.from_numpy(stats.std[layer.name]) for layer in style_layers(generator)]


# --- S files ---------------------------------------------------------------------------------------

_OLD_KEY = re.compile(r"\d{2}_.+")


def save_s(path, generator, styles: Mapping[str, torch.Tensor]) -> Path:
    """Write S (one sample or a batch) as .npz keyed by layer name, with the convention it follows."""
    check_s(generator, styles)
    arrays = {name: torch.as_tensor(value).detach().cpu().numpy().astype(np.float32) for name, value in styles.items()}
    arrays[CONVENTION_KEY] = np.array(CONVENTIONS[generator.kind])
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return Path(path)


def load_s(path, generator=None) -> StyleDict:
    """S from `save_s`'s .npz or a stylegan3-editing pickled S dict (name -> [N, C]); checked against `generator`
    when given. sgtool's old S files (raw affine outputs) are refused: their values mean something else."""
    path = Path(path)
    if not path.is_file():
        raise SgtoolError(f"S file {path} does not exist")
    with open(path, "rb") as f:
        is_npz = f.read(4) == b"PK\x03\x04"
    if is_npz:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        convention = str(arrays.pop(CONVENTION_KEY, ""))
        if not convention:
            old = arrays and all(_OLD_KEY.fullmatch(key) for key in arrays)
            raise SgtoolError(
                f"{path} is an S file of an older sgtool (raw affine outputs, before StyleSpace followed "
                "stylegan3-editing/StyleCLIP): its values cannot be used now; edit the latent again to write it anew"
                if old else f"{path} is not an sgtool S file (no {CONVENTION_KEY} entry)")
    else:
        try:
            with open(path, "rb") as f:
                arrays = restricted_load(f, NUMPY_GLOBALS)
        except UnsafePickleError as exc:
            raise SgtoolError(f"refusing to load {path}: it references code '{exc.qualname}'") from None
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise SgtoolError(f"{path} is neither an sgtool S file (.npz) nor a pickled S dict ({exc})") from None
        if not isinstance(arrays, dict) or not all(isinstance(v, np.ndarray) for v in arrays.values()):
            raise SgtoolError(f"{path} does not hold a dict of layer name -> array")
        convention = CONVENTIONS["stylegan3"]
    styles = {}
    for name, value in arrays.items():
        value = np.asarray(value, dtype=np.float32)
        styles[str(name)] = torch.from_numpy(value[None] if value.ndim == 1 else value)
    if generator is not None:
        if convention != CONVENTIONS[generator.kind]:
            raise SgtoolError(f"{path} holds S in the {convention!r} convention; this {generator.kind} generator "
                              f"uses {CONVENTIONS[generator.kind]!r}")
        check_s(generator, styles, what=str(path))
    return styles
