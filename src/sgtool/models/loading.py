"""Load generators from every format users bring, without running code from the file.

Formats: NVIDIA's network pickles (restricted unpickler), bare NVIDIA-named state dicts such as
stylegan3-editing's `.pt` generators (architecture inferred from tensor shapes), rosinality's
layout, and sgtool's own safetensors file (architecture config + weights).
"""

from __future__ import annotations

import pickle
import re
import struct
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from .builtin import BUILTIN_GENERATORS, build_builtin
from .factory import build_generator, generator_from_state_dict, load_state
from .formats import LEGACY_TORCH_MAGIC, first_line, load_sgtool, sniff, torch_load
from .rosinality import generator_from_rosinality, is_rosinality_state
from .safe_pickle import PersistentRecord, UnsafePickleError, plain, record_state_dict, restricted_load


def _kind_of_record(record: PersistentRecord) -> str:
    """StyleGAN3 vs StyleGAN2 from the pickled module tree, not from any source text."""
    synthesis = record.submodules.get("synthesis")
    names = set(synthesis.submodules) if isinstance(synthesis, PersistentRecord) else set()
    if "input" in names and any(re.fullmatch(r"L\d+_\d+_\d+", n) for n in names):
        return "stylegan3"
    if "b4" in names:
        return "stylegan2"
    raise CheckpointError("the pickled generator is neither a StyleGAN3 nor a StyleGAN2 synthesis network")


_POSITIONAL = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")


def _load_nvidia_pickle(path: Path):
    try:
        with open(path, "rb") as f:
            data = restricted_load(f)
    except UnsafePickleError as exc:
        raise CheckpointError(f"refusing to load {path}: it references code '{exc.qualname}'") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            RuntimeError, struct.error, RecursionError, MemoryError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({type(exc).__name__}: {first_line(exc)}); "
                              "download it again") from None
    if isinstance(data, PersistentRecord):
        record = data
    elif isinstance(data, dict):
        record = data.get("G_ema", data.get("G"))
        if not isinstance(record, PersistentRecord):
            raise CheckpointError(f"{path} holds no generator (no G_ema or G network; keys: "
                                  f"{', '.join(map(str, list(data)[:6]))})")
    else:
        raise CheckpointError(f"{path} is a pickle but not an NVIDIA network snapshot")
    if record.class_name != "Generator":
        raise CheckpointError(f"{path}: expected a Generator network, found {record.class_name}")
    kind = _kind_of_record(record)
    try:
        kwargs = plain(record.init_kwargs)
        kwargs.update(dict(zip(_POSITIONAL, plain(list(record.init_args)))))
        state = record_state_dict(record)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path} is not a usable network pickle ({exc})") from None
    generator = build_generator(kind, kwargs, str(path))
    load_state(generator, state, str(path))
    generator.layout = "nvidia-pkl"
    return generator


def _unwrap_state_dict(obj, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        inner = obj.get("state_dict") if isinstance(obj.get("state_dict"), dict) else {}
        if any(str(k).startswith("encoder.") for k in inner):
            # An encoder checkpoint (stylegan3-editing's ReStyle): its decoder is the generator it inverts into,
            # taken with the identity input transform as the encoder takes it.
            decoder = {str(k)[len("decoder."):]: v for k, v in inner.items() if str(k).startswith("decoder.")
                       and isinstance(v, torch.Tensor) and str(k) != "decoder.synthesis.input.transform"}
            if not decoder:
                raise CheckpointError(f"{path} is an encoder checkpoint without its decoder's weights; give the "
                                      "generator it was trained for")
            return decoder
        for key in ("G_ema", "state_dict", "generator"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and any(k.startswith(("mapping.", "synthesis.")) for k in tensors):
            return tensors
    raise CheckpointError(f"{path} is not a generator state dict (no mapping.*/synthesis.* tensors)")


def _rosinality_parts(obj):
    """(state, latent_avg) of a rosinality-layout generator: a `g_ema` file, a bare rosinality state dict,
    or the `decoder.*` weights embedded in an e4e/pSp/HyperStyle checkpoint; None for other layouts."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("g_ema"), dict):
        return obj["g_ema"], obj.get("latent_avg")
    if is_rosinality_state(obj):
        return obj, None
    inner = obj.get("state_dict")
    if isinstance(inner, dict) and "decoder.input.input" in inner:
        decoder = {k[len("decoder."):]: v for k, v in inner.items() if str(k).startswith("decoder.")}
        if is_rosinality_state(decoder):
            return decoder, obj.get("latent_avg")
    return None


def _generator_from_torch_object(obj, path: Path, arch):
    rosinality = _rosinality_parts(obj)
    if rosinality is not None:
        state, latent_avg = rosinality
        latent_avg = latent_avg if isinstance(latent_avg, torch.Tensor) else None
        return generator_from_rosinality(state, latent_avg, source=str(path))
    generator = generator_from_state_dict(_unwrap_state_dict(obj, path), arch, str(path))
    generator.layout = "nvidia-state-dict"
    return generator


def load_generator(path, device="cpu", arch: str | dict | None = None) -> nn.Module:
    """Load a generator checkpoint (any supported format) or a built-in test model by name.

    Returns the network in eval mode with gradients off, on `device`, exposing NVIDIA's
    interface: z_dim, c_dim, w_dim, num_ws, img_resolution, mapping(...), synthesis(...).
    """
    from ..hub import resolve_reference

    path_str = str(path)
    resolved = resolve_reference(path_str, kind="generator")  # a registry name: its cached file
    if resolved in BUILTIN_GENERATORS:
        generator = build_builtin(resolved)
    else:
        path = Path(resolved)
        fmt = sniff(path)
        if fmt == "safetensors":
            generator = load_sgtool(path)
        elif fmt == "torch-zip":
            generator = _generator_from_torch_object(torch_load(path), path, arch)
        else:
            generator = _load_pickle_or_legacy_torch(path, arch)
    generator.source = path_str
    return generator.eval().requires_grad_(False).to(device)


def _load_pickle_or_legacy_torch(path: Path, arch):
    with open(path, "rb") as f:
        head = f.read(64)
    # Legacy (non-zip) torch.save files start with a pickled magic number.
    if head[:2] == b"\x80\x02" and LEGACY_TORCH_MAGIC in head:
        return _generator_from_torch_object(torch_load(path), path, arch)
    return _load_nvidia_pickle(path)

