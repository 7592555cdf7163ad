"""Load generators from every format users bring, without running code from the file.

Formats: NVIDIA's network pickles (restricted unpickler), bare NVIDIA-named state dicts such as
stylegan3-editing's `.pt` generators (architecture inferred from tensor shapes), and sgtool's
own safetensors file (architecture config + weights).
"""

from __future__ import annotations

import json
import pickle
import re
import struct
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from . import stylegan2, stylegan3
from .safe_pickle import PersistentRecord, UnsafePickleError, plain, record_state_dict, restricted_load

GENERATOR_CLASSES = {"stylegan3": stylegan3.Generator, "stylegan2": stylegan2.Generator}
SGTOOL_FORMAT = "sgtool-generator"
SGTOOL_FORMAT_VERSION = "1"

# The official configs' channel schedules; shapes fix the rest (resolution, dims, depth).
ARCH_PRESETS = {
    "stylegan3-t": dict(channel_base=32768, channel_max=512, conv_kernel=3, use_radial_filters=False),
    "stylegan3-r": dict(channel_base=65536, channel_max=1024, conv_kernel=1, use_radial_filters=True),
    "stylegan2": dict(channel_base=32768, channel_max=512),
}


def build_generator(kind: str, init_kwargs: dict) -> nn.Module:
    """Construct our generator from NVIDIA-style constructor kwargs."""
    if kind not in GENERATOR_CLASSES:
        raise CheckpointError(f"unknown generator kind {kind!r}; known: {', '.join(GENERATOR_CLASSES)}")
    kwargs = dict(init_kwargs)
    # stylegan2-ada-pytorch nested the synthesis options; later releases pass them flat.
    kwargs.update(kwargs.pop("synthesis_kwargs", None) or {})
    try:
        return GENERATOR_CLASSES[kind](**kwargs)
    except TypeError as exc:
        raise CheckpointError(f"unsupported {kind} generator options: {exc}") from None


def check_state_names(module: nn.Module, state: dict, source: str, what: str = "the generator it describes") -> None:
    """Strict name and shape check of `state` against `module`, mismatches reported in one line."""
    ours = module.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    wrong = sorted(k for k in set(ours) & set(state) if tuple(ours[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if names:
                parts.append(f"{label}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}")
        raise CheckpointError(f"{source} does not match {what} ({'; '.join(parts)})")


def load_state(generator: nn.Module, state: dict, source: str) -> None:
    """Copy weights into a generator after a strict name and shape check."""
    check_state_names(generator, state, source)
    generator.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        raise CheckpointError(f"{path} is empty; download it again")
    lowered = head.lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html")) or b"<html" in lowered[:256]:
        raise CheckpointError(f"{path} is an HTML page, not a checkpoint (a failed or blocked download); "
                              "download the file again and check its size")
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 0 < header_len < 100_000_000:
            return "safetensors"
    if head[:1] == b"\x80":
        return "pickle"
    raise CheckpointError(f"{path} is not a generator checkpoint (unknown file format); expected an NVIDIA "
                          ".pkl, a .pt state dict or an sgtool .safetensors file")


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
            RuntimeError, struct.error) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}); "
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
    kwargs = plain(record.init_kwargs)
    kwargs.update(dict(zip(_POSITIONAL, plain(list(record.init_args)))))
    generator = build_generator(kind, kwargs)
    load_state(generator, record_state_dict(record), str(path))
    generator.layout = "nvidia-pkl"
    return generator


def _torch_load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"refusing to load {path}: it holds objects other than tensors ({first})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc}); download it again") from None


def _unwrap_state_dict(obj, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        if any(str(k).startswith("encoder.") for k in obj.get("state_dict", {}) or {}):
            raise CheckpointError(f"{path} is an encoder checkpoint, not a generator; pass it as --encoder")
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
    from .rosinality import is_rosinality_state

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
    from .rosinality import generator_from_rosinality

    rosinality = _rosinality_parts(obj)
    if rosinality is not None:
        state, latent_avg = rosinality
        latent_avg = latent_avg if isinstance(latent_avg, torch.Tensor) else None
        return generator_from_rosinality(state, latent_avg, source=str(path))
    generator = generator_from_state_dict(_unwrap_state_dict(obj, path), arch, str(path))
    generator.layout = "nvidia-state-dict"
    return generator


def _count_indexed(state, pattern) -> int:
    return sum(1 for k in state if re.fullmatch(pattern, k))


def infer_stylegan3_kwargs(state: dict, preset: dict | None = None) -> dict:
    """Constructor kwargs of a StyleGAN3 generator from its state-dict shapes."""
    layers = {}
    for key in state:
        m = re.fullmatch(r"synthesis\.L(\d+)_(\d+)_(\d+)\.weight", key)
        if m:
            layers[int(m.group(1))] = (int(m.group(2)), int(m.group(3)), state[key])
    if not layers:
        raise CheckpointError("no StyleGAN3 synthesis layers (synthesis.L*_*_*) in the state dict")
    num_layers = max(layers)
    kwargs = _mapping_kwargs(state)
    kwargs.update(img_resolution=layers[num_layers][0], img_channels=layers[num_layers][1],
                  num_layers=num_layers, conv_kernel=int(layers[0][2].shape[-1]),
                  use_radial_filters=any(k.endswith("down_filter") and v.ndim == 2 for k, v in state.items()))
    if kwargs["num_layers"] == 14:
        kwargs.pop("num_layers")
    if preset:
        kwargs.update(preset)
    else:
        channels = [layers[i][1] for i in range(num_layers)]
        kwargs.update(_sg3_channel_schedule(channels, kwargs["img_resolution"], num_layers))
    return kwargs


def _sg3_channel_schedule(channels, img_resolution, num_layers, num_critical=2, first_cutoff=2):
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (img_resolution / 2 / first_cutoff) ** exponents
    channel_max = max(channels)
    for exponent in range(4, 22):
        base = 2 ** exponent
        guess = np.rint(np.minimum((base / 2) / cutoffs[:num_layers], channel_max)).astype(int).tolist()
        if guess == channels:
            return dict(channel_base=base, channel_max=channel_max)
    raise CheckpointError("cannot infer the channel schedule of this StyleGAN3 state dict; pass --arch")


def infer_stylegan2_kwargs(state: dict, preset: dict | None = None) -> dict:
    """Constructor kwargs of a StyleGAN2 (NVIDIA layout) generator from its state-dict shapes."""
    resolutions = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"synthesis\.b(\d+)\.conv1\.weight", k)))
    if not resolutions:
        raise CheckpointError("no StyleGAN2 synthesis blocks (synthesis.b*) in the state dict")
    img_resolution = resolutions[-1]
    kwargs = _mapping_kwargs(state)
    kwargs.update(img_resolution=img_resolution,
                  img_channels=int(state[f"synthesis.b{img_resolution}.torgb.weight"].shape[0]))
    if any(k.startswith("synthesis.b8.skip.") for k in state):
        kwargs["architecture"] = "resnet"
    elif "synthesis.b4.torgb.weight" in state:
        kwargs["architecture"] = "skip"
    else:
        kwargs["architecture"] = "orig"
    if preset:
        kwargs.update(preset)
        return kwargs
    channels = {r: int(state[f"synthesis.b{r}.conv1.weight"].shape[0]) for r in resolutions}
    channel_max = max(channels.values())
    for exponent in range(4, 22):
        if all(min(2 ** exponent // r, channel_max) == c for r, c in channels.items()):
            kwargs.update(channel_base=2 ** exponent, channel_max=channel_max)
            return kwargs
    raise CheckpointError("cannot infer the channel schedule of this StyleGAN2 state dict; pass --arch")


def _mapping_kwargs(state: dict) -> dict:
    if "mapping.w_avg" not in state or "mapping.fc0.weight" not in state:
        raise CheckpointError("the state dict has no mapping network (mapping.fc0, mapping.w_avg)")
    w_dim = int(state["mapping.w_avg"].shape[0])
    c_dim = int(state["mapping.embed.weight"].shape[1]) if "mapping.embed.weight" in state else 0
    embed = int(state["mapping.embed.weight"].shape[0]) if c_dim else 0
    z_dim = int(state["mapping.fc0.weight"].shape[1]) - embed
    num_layers = _count_indexed(state, r"mapping\.fc\d+\.weight")
    mapping = {"num_layers": num_layers}
    if c_dim and embed != w_dim:
        mapping["embed_features"] = embed
    return dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, mapping_kwargs=mapping)


def generator_from_state_dict(state: dict, arch: str | dict | None = None, source: str = "state dict"):
    """Build and load a generator from a bare NVIDIA-named state dict, inferring its architecture."""
    state = {k: v for k, v in state.items() if k != "synthesis.input.transform" or v.shape == (3, 3)}
    is_sg3 = any(k.startswith("synthesis.input.") for k in state)
    preset = None
    if isinstance(arch, str):
        if arch not in ARCH_PRESETS:
            raise CheckpointError(f"unknown --arch {arch!r}; choose one of {', '.join(ARCH_PRESETS)}")
        preset = ARCH_PRESETS[arch]
        is_sg3 = arch.startswith("stylegan3")
    if isinstance(arch, dict):
        kind, kwargs = ("stylegan3" if is_sg3 else "stylegan2"), dict(arch)
    elif is_sg3:
        kind, kwargs = "stylegan3", infer_stylegan3_kwargs(state, preset)
    else:
        kind, kwargs = "stylegan2", infer_stylegan2_kwargs(state, preset)
    generator = build_generator(kind, kwargs)
    # A bare state dict may lack the identity input transform (some tools drop it).
    if "synthesis.input.transform" in generator.state_dict() and "synthesis.input.transform" not in state:
        state["synthesis.input.transform"] = torch.eye(3)
    load_state(generator, state, source)
    return generator


def save_generator(generator: nn.Module, path, metadata: dict | None = None) -> Path:
    """Write sgtool's own format: safetensors weights + the architecture config as metadata."""
    from safetensors.torch import save_file

    from ..utils.io import atomic_path

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in generator.state_dict().items()}
    meta = {"format": SGTOOL_FORMAT, "version": SGTOOL_FORMAT_VERSION, "kind": generator.kind,
            "init_kwargs": json.dumps(generator.init_kwargs), "extra": json.dumps(metadata or {})}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return Path(path)


def _load_sgtool(path: Path):
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc}); write it again") from None
    if meta.get("format") != SGTOOL_FORMAT:
        # A plain safetensors state dict (e.g. converted elsewhere): infer the architecture.
        generator = generator_from_state_dict(state, source=str(path))
        generator.layout = "nvidia-state-dict"
        return generator
    if meta.get("version") != SGTOOL_FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer sgtool (format version {meta.get('version')}); "
                              "upgrade sgtool")
    generator = build_generator(meta["kind"], json.loads(meta["init_kwargs"]))
    load_state(generator, state, str(path))
    generator.layout = "sgtool"
    generator.extra_metadata = json.loads(meta.get("extra", "{}"))
    return generator


def load_generator(path, device="cpu", arch: str | dict | None = None) -> nn.Module:
    """Load a generator checkpoint (any supported format) or a built-in test model by name.

    Returns the network in eval mode with gradients off, on `device`, exposing NVIDIA's
    interface: z_dim, c_dim, w_dim, num_ws, img_resolution, mapping(...), synthesis(...).
    """
    from ..hub import is_registry_reference, resolve_checkpoint
    from .builtin import BUILTIN_GENERATORS, build_builtin

    path_str = str(path)
    if path_str in BUILTIN_GENERATORS and not Path(path_str).exists():
        generator = build_builtin(path_str)
    else:
        path = Path(path)
        if is_registry_reference(path_str):
            path = resolve_checkpoint(path_str, kind="generator")  # a registry name: cached or downloaded
        if not path.exists():
            raise CheckpointError(f"{path} does not exist; give a checkpoint file, a registry name "
                                  f"(`sgtool models list`) or a built-in model ({', '.join(BUILTIN_GENERATORS)})")
        if path.is_dir():
            raise CheckpointError(f"{path} is a directory; give the checkpoint file inside it")
        fmt = _sniff(path)
        if fmt == "safetensors":
            generator = _load_sgtool(path)
        elif fmt == "torch-zip":
            generator = _generator_from_torch_object(_torch_load(path), path, arch)
        else:
            generator = _load_pickle_or_legacy_torch(path, arch)
    generator.source = path_str
    return generator.eval().requires_grad_(False).to(device)


def _load_pickle_or_legacy_torch(path: Path, arch):
    with open(path, "rb") as f:
        head = f.read(64)
    # Legacy (non-zip) torch.save files start with a pickled magic number.
    if head[:2] == b"\x80\x02" and b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19" in head:
        return _generator_from_torch_object(_torch_load(path), path, arch)
    return _load_nvidia_pickle(path)


def describe_generator(generator: nn.Module) -> dict:
    """Facts `sgtool info` reports."""
    info = {
        "kind": generator.kind,
        "layout": getattr(generator, "layout", "builtin" if getattr(generator, "is_test_model", False) else None),
        "config": generator.config_name,
        "resolution": generator.img_resolution,
        "img_channels": generator.img_channels,
        "z_dim": generator.z_dim,
        "w_dim": generator.w_dim,
        "c_dim": generator.c_dim,
        "num_ws": generator.num_ws,
        "mapping_layers": generator.mapping.num_layers,
        "parameters": sum(p.numel() for p in generator.parameters()),
        "init_kwargs": generator.init_kwargs,
    }
    if generator.kind == "stylegan3":
        info["input_transform_identity"] = bool(torch.equal(generator.synthesis.input.transform.cpu(), torch.eye(3)))
    return info
