"""Our generators from constructor arguments or bare state dicts, with strict weight checks.

The official configs fix channel schedules; everything else (resolution, dims, depth) is read from
tensor shapes, so stylegan3-editing's bare `.pt` generators load without their training config.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from . import stylegan2, stylegan3

GENERATOR_CLASSES = {"stylegan3": stylegan3.Generator, "stylegan2": stylegan2.Generator}

# The official configs' channel schedules; shapes fix the rest (resolution, dims, depth).
ARCH_PRESETS = {
    "stylegan3-t": dict(channel_base=32768, channel_max=512, conv_kernel=3, use_radial_filters=False),
    "stylegan3-r": dict(channel_base=65536, channel_max=1024, conv_kernel=1, use_radial_filters=True),
    "stylegan2": dict(channel_base=32768, channel_max=512),
}


# Bounds on constructor arguments read from a file, far above every released network (z/w 512, channels
# 1024, 1024 px) and low enough that no value within them makes the build allocate more than a few GB.
INIT_LIMITS = {"z_dim": (0, 4096), "w_dim": (1, 4096), "c_dim": (0, 65536), "img_resolution": (4, 4096),
               "img_channels": (1, 16), "channel_base": (1, 2 ** 22), "channel_max": (1, 2048),
               "num_layers": (3, 64), "conv_kernel": (1, 7), "num_fp16_res": (0, 16)}
MAPPING_LIMITS = {"num_layers": (1, 32), "embed_features": (0, 4096), "layer_features": (1, 4096)}


def check_init_kwargs(kind: str, kwargs: dict, source: str = "") -> None:
    """Refuse constructor arguments that no real generator has, before anything is allocated."""
    where = f"{source}: " if source else ""

    def check(name, value, limits):
        low, high = limits
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise CheckpointError(f"{where}the {kind} generator option {name}={value!r} is outside {low}..{high}; "
                                  "the checkpoint is corrupt or was not written for a StyleGAN generator")

    for name in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"):
        if name not in kwargs:
            raise CheckpointError(f"{where}the {kind} generator options lack {name}; the checkpoint is incomplete")
    for name, limits in INIT_LIMITS.items():
        if kwargs.get(name) is not None:
            check(name, kwargs[name], limits)
    mapping = kwargs.get("mapping_kwargs") or {}
    if not isinstance(mapping, dict):
        raise CheckpointError(f"{where}the {kind} generator's mapping options are a {type(mapping).__name__}, not a "
                              "mapping")
    for name, limits in MAPPING_LIMITS.items():
        if mapping.get(name) is not None:
            check(f"mapping_kwargs.{name}", mapping[name], limits)


def build_generator(kind: str, init_kwargs: dict, source: str = "") -> nn.Module:
    """Construct our generator from NVIDIA-style constructor kwargs (checked against INIT_LIMITS first).

    `source` (the file the kwargs came from) is named in errors."""
    if kind not in GENERATOR_CLASSES:
        raise CheckpointError(f"unknown generator kind {kind!r}; known: {', '.join(GENERATOR_CLASSES)}")
    kwargs = dict(init_kwargs)
    # stylegan2-ada-pytorch nested the synthesis options; later releases pass them flat.
    kwargs.update(kwargs.pop("synthesis_kwargs", None) or {})
    check_init_kwargs(kind, kwargs, source)
    where = f"{source}: " if source else ""
    try:
        return GENERATOR_CLASSES[kind](**kwargs)
    except TypeError as exc:
        raise CheckpointError(f"{where}unsupported {kind} generator options: {exc}") from None
    except (ValueError, ZeroDivisionError, OverflowError, IndexError, RuntimeError) as exc:
        raise CheckpointError(f"{where}cannot build the {kind} generator these options describe "
                              f"({type(exc).__name__}: {exc}); the checkpoint is corrupt") from None


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


def check_finite(state: dict, source: str) -> None:
    """NaN or infinity in stored weights renders black images: refuse the file instead."""
    for name, tensor in state.items():
        if torch.is_floating_point(tensor) and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{source}: weight {name} holds NaN or infinite values; the file is corrupt "
                                  "(download or write it again)")


def load_state(generator: nn.Module, state: dict, source: str) -> None:
    """Copy weights into a generator after a strict name, shape and finiteness check."""
    check_state_names(generator, state, source)
    check_finite(state, source)
    generator.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)


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
        family = {k: preset[k] for k in ("conv_kernel", "use_radial_filters")}
        if any(kwargs[k] != v for k, v in family.items()):
            found = "stylegan3-r" if kwargs["use_radial_filters"] else "stylegan3-t"
            raise CheckpointError(f"this state dict is a {found} generator ({kwargs['conv_kernel']}x"
                                  f"{kwargs['conv_kernel']} convolutions); pass --arch {found} or drop --arch")
    channels = [layers[i][1] for i in range(num_layers)]
    kwargs.update(_channel_schedule(lambda: _sg3_channel_schedule(channels, kwargs["img_resolution"], num_layers),
                                    preset))
    return kwargs


def _channel_schedule(infer, preset: dict | None) -> dict:
    """The schedule the shapes give; a preset (--arch) only where they leave it open."""
    try:
        return infer()
    except CheckpointError:
        if preset is None:
            raise
        return {k: preset[k] for k in ("channel_base", "channel_max")}


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
    channels = {r: int(state[f"synthesis.b{r}.conv1.weight"].shape[0]) for r in resolutions}
    kwargs.update(_channel_schedule(lambda: _sg2_channel_schedule(channels), preset))
    return kwargs


def _sg2_channel_schedule(channels: dict[int, int]) -> dict:
    channel_max = max(channels.values())
    for exponent in range(4, 22):
        if all(min(2 ** exponent // r, channel_max) == c for r, c in channels.items()):
            return dict(channel_base=2 ** exponent, channel_max=channel_max)
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
        if is_sg3 != arch.startswith("stylegan3") and any(k.startswith("synthesis.") for k in state):
            found = "a StyleGAN3" if is_sg3 else "a StyleGAN2"
            raise CheckpointError(f"this state dict is {found} generator and --arch {arch} is not; drop --arch (its "
                                  "architecture is read from the shapes)")
        is_sg3 = arch.startswith("stylegan3")
    if isinstance(arch, dict):
        kind, kwargs = ("stylegan3" if is_sg3 else "stylegan2"), dict(arch)
    elif is_sg3:
        kind, kwargs = "stylegan3", infer_stylegan3_kwargs(state, preset)
    else:
        kind, kwargs = "stylegan2", infer_stylegan2_kwargs(state, preset)
    generator = build_generator(kind, kwargs, source)
    # A bare state dict may lack the identity input transform (some tools drop it).
    if "synthesis.input.transform" in generator.state_dict() and "synthesis.input.transform" not in state:
        state["synthesis.input.transform"] = torch.eye(3)
    load_state(generator, state, source)
    return generator


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
