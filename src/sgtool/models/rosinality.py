"""rosinality's StyleGAN2 layout (stylegan2-pytorch) loaded into, and exported from, our NVIDIA-layout network.

rosinality's generator computes the same function as NVIDIA's StyleGAN2 `skip` architecture: the
mapping (PixelNorm + EqualLinear with lr_mul 0.01), modulated/demodulated convs, the transposed
upsampling conv followed by a [1,3,3,1] blur with pad (1, 1), noise added before bias + leaky ReLU
x sqrt(2), and the skip RGB image upsampled with pad (2, 1) all match op for op (checked against
reference renders). Only names and shapes differ, so one network serves both layouts:

| rosinality (`g_ema` / `decoder.*`)            | ours (NVIDIA)                                   |
| --------------------------------------------- | ----------------------------------------------- |
| `style.{i}.weight/bias` (i = 1..n_mlp)          | `mapping.fc{i-1}.weight/bias`                   |
| `latent_avg` (file top level, [w_dim])          | `mapping.w_avg`                                 |
| `input.input` [1, C, 4, 4]                      | `synthesis.b4.const` [C, 4, 4]                  |
| `conv1.*`, `noises.noise_0`                     | `synthesis.b4.conv1.*`                          |
| `to_rgb1.*`                                     | `synthesis.b4.torgb.*`                          |
| `convs.{2k}.*`, `noises.noise_{2k+1}`           | `synthesis.b{R}.conv0.*` (R = 2**(k+3))         |
| `convs.{2k+1}.*`, `noises.noise_{2k+2}`         | `synthesis.b{R}.conv1.*`                        |
| `to_rgbs.{k}.*`                                 | `synthesis.b{R}.torgb.*`                        |

Within a conv: `conv.weight` [1, O, I, k, k] -> `weight` [O, I, k, k]; `conv.modulation.*` ->
`affine.*`; `noise.weight` [1] -> `noise_strength` []; `activate.bias` -> `bias`; noise buffer
[1, 1, R, R] -> `noise_const` [R, R]; to-RGB `bias` [1, 3, 1, 1] -> [3]. The blur/upsample
`kernel` buffers are derived from the [1, 3, 3, 1] filter and not stored on our side.
rosinality applies no activation clamp, so loaded generators use conv_clamp=None.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from ..errors import CheckpointError
from .factory import build_generator, load_state

ROSINALITY_FILTER = (1, 3, 3, 1)
ROSINALITY_LR_MLP = 0.01
MEAN_LATENT_SAMPLES = 4096


def is_rosinality_state(state: dict) -> bool:
    return "input.input" in state and "conv1.conv.weight" in state


def _blocks(state: dict) -> list[int]:
    """Resolutions of the upsampling blocks (8, 16, ...) from the to_rgbs indices."""
    indices = sorted({int(m.group(1)) for k in state if (m := re.fullmatch(r"to_rgbs\.(\d+)\.conv\.weight", k))})
    if indices != list(range(len(indices))):
        raise CheckpointError("rosinality generator has a gap in its to_rgbs layers; the file is incomplete")
    return [2 ** (i + 3) for i in indices]


def _conv_pairs(prefix_ros: str, prefix_nv: str, noise_index: int | None):
    pairs = [(f"{prefix_ros}.conv.weight", f"{prefix_nv}.weight"),
             (f"{prefix_ros}.conv.modulation.weight", f"{prefix_nv}.affine.weight"),
             (f"{prefix_ros}.conv.modulation.bias", f"{prefix_nv}.affine.bias")]
    if noise_index is not None:
        pairs += [(f"{prefix_ros}.noise.weight", f"{prefix_nv}.noise_strength"),
                  (f"{prefix_ros}.activate.bias", f"{prefix_nv}.bias"),
                  (f"noises.noise_{noise_index}", f"{prefix_nv}.noise_const")]
    else:
        pairs.append((f"{prefix_ros}.bias", f"{prefix_nv}.bias"))
    return pairs


def name_pairs(n_mlp: int, resolutions: list[int]) -> list[tuple[str, str]]:
    """(rosinality name, NVIDIA name) for every stored tensor of a generator."""
    pairs = []
    for i in range(1, n_mlp + 1):
        pairs += [(f"style.{i}.weight", f"mapping.fc{i - 1}.weight"), (f"style.{i}.bias", f"mapping.fc{i - 1}.bias")]
    pairs.append(("input.input", "synthesis.b4.const"))
    pairs += _conv_pairs("conv1", "synthesis.b4.conv1", 0)
    pairs += _conv_pairs("to_rgb1", "synthesis.b4.torgb", None)
    for k, res in enumerate(resolutions):
        pairs += _conv_pairs(f"convs.{2 * k}", f"synthesis.b{res}.conv0", 2 * k + 1)
        pairs += _conv_pairs(f"convs.{2 * k + 1}", f"synthesis.b{res}.conv1", 2 * k + 2)
        pairs += _conv_pairs(f"to_rgbs.{k}", f"synthesis.b{res}.torgb", None)
    return pairs


def _nvidia_shape(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """Drop rosinality's leading singleton axes (scalar noise strength, flat RGB bias) for NVIDIA's shapes."""
    tensor = tensor.contiguous()
    if name.endswith(".noise_const"):
        return tensor.reshape(tensor.shape[-2:])
    if name.endswith(".const") or re.search(r"\.(conv[01]|torgb)\.weight$", name):
        return tensor.reshape(tensor.shape[1:])
    if name.endswith(".noise_strength"):
        return tensor.reshape([])
    if name.endswith(".torgb.bias"):
        return tensor.reshape(-1)
    return tensor


def _rosinality_shape(name: str, tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach().to("cpu", torch.float32).contiguous().clone()
    if name in ("input.input",) or name.endswith(".conv.weight"):
        return tensor.unsqueeze(0)
    if name.startswith("noises."):
        return tensor.reshape(1, 1, *tensor.shape)
    if name.endswith("noise.weight"):
        return tensor.reshape(1)
    if re.fullmatch(r"to_rgbs?\d*(\.\d+)?\.bias", name):
        return tensor.reshape(1, -1, 1, 1)
    return tensor


def _check_kernels(state: dict, source: str) -> None:
    expected = torch.tensor(ROSINALITY_FILTER, dtype=torch.float32)
    expected = torch.outer(expected, expected)
    expected = expected / expected.sum()
    for name, value in state.items():
        if name.endswith((".blur.kernel", ".upsample.kernel")):
            got = value.to(torch.float32)
            # Both are stored pre-scaled by up**2 = 4.
            if got.shape != expected.shape or not torch.allclose(got / got.sum(), expected, atol=1e-6):
                raise CheckpointError(f"{source}: {name} is not rosinality's [1, 3, 3, 1] blur kernel; "
                                      "custom blur kernels are not supported")


def generator_kwargs(state: dict, source: str = "rosinality generator") -> dict:
    """NVIDIA constructor kwargs of the network a rosinality state dict describes (from shapes)."""
    n_mlp = sum(1 for k in state if re.fullmatch(r"style\.\d+\.weight", k))
    if n_mlp == 0:
        raise CheckpointError(f"{source} has no mapping network (style.*.weight)")
    style_dim = int(state["style.1.weight"].shape[1])
    resolutions = _blocks(state)
    img_resolution = resolutions[-1] if resolutions else 4
    channels = {4: int(state["conv1.conv.weight"].shape[1])}
    for k, res in enumerate(resolutions):
        channels[res] = int(state[f"convs.{2 * k}.conv.weight"].shape[1])
    channel_max = max(channels.values())
    for exponent in range(2, 24):
        base = 2 ** exponent
        if all(min(base // r, channel_max) == c for r, c in channels.items()):
            break
    else:
        raise CheckpointError(f"{source}: channel widths {channels} follow no power-of-two schedule")
    return dict(z_dim=style_dim, c_dim=0, w_dim=int(state["conv1.conv.modulation.weight"].shape[1]),
                img_resolution=img_resolution, img_channels=int(state["to_rgb1.conv.weight"].shape[1]),
                mapping_kwargs={"num_layers": n_mlp, "lr_multiplier": ROSINALITY_LR_MLP},
                architecture="skip", channel_base=base, channel_max=channel_max, conv_clamp=None,
                num_fp16_res=0)


def to_nvidia_state(state: dict, latent_avg: torch.Tensor | None = None,
                    source: str = "rosinality generator") -> tuple[dict, dict]:
    """Rename a rosinality generator state dict to ours: returns (state, constructor kwargs)."""
    core = [k for k in ("style.1.weight", "input.input", "conv1.conv.weight", "to_rgb1.conv.weight") if k not in state]
    if core:
        raise CheckpointError(f"{source} is not a complete rosinality-layout StyleGAN2 generator "
                              f"(missing: {', '.join(core)})")
    _check_kernels(state, source)
    try:
        kwargs = generator_kwargs(state, source)
    except (IndexError, KeyError) as exc:
        raise CheckpointError(f"{source} is a damaged rosinality-layout generator (bad tensor {exc})") from None
    pairs = name_pairs(kwargs["mapping_kwargs"]["num_layers"], _blocks(state))
    missing = [ros for ros, _ in pairs if ros not in state]
    known = {ros for ros, _ in pairs}
    extra = [k for k in state if k not in known and not k.endswith((".blur.kernel", ".upsample.kernel"))]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if extra:
            parts.append(f"unexpected: {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}")
        raise CheckpointError(f"{source} is not a complete rosinality-layout StyleGAN2 generator ({'; '.join(parts)})")
    ours = {nv: _nvidia_shape(nv, state[ros]) for ros, nv in pairs}
    if latent_avg is not None:
        ours["mapping.w_avg"] = latent_avg.detach().reshape(-1, latent_avg.shape[-1])[0].contiguous()
    return ours, kwargs


@torch.no_grad()
def mean_latent(generator: nn.Module, samples: int = MEAN_LATENT_SAMPLES, seed: int = 0) -> torch.Tensor:
    """rosinality's `mean_latent`: the average mapped w of random z (our own seeded RNG stream)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(samples, generator.z_dim, generator=gen)
    return generator.mapping(z, None)[:, 0].mean(0)


def generator_from_rosinality(state: dict, latent_avg: torch.Tensor | None = None,
                              source: str = "rosinality generator") -> nn.Module:
    """Build our StyleGAN2 network from a rosinality state dict (`g_ema` or an encoder's `decoder.*`).

    Without a stored latent_avg, w_avg is estimated as rosinality does (mean of 4096 mapped z).
    """
    ours, kwargs = to_nvidia_state(state, latent_avg, source)
    generator = build_generator("stylegan2", kwargs)
    # The FIR filters are fixed buffers derived from [1, 3, 3, 1] (checked above), as built.
    ours.update({k: v for k, v in generator.state_dict().items() if k.endswith("resample_filter")})
    estimated = "mapping.w_avg" not in ours
    if estimated:
        ours["mapping.w_avg"] = torch.zeros(kwargs["w_dim"])
    load_state(generator, ours, source)
    if estimated:
        generator.mapping.w_avg.copy_(mean_latent(generator))
    generator.layout = "rosinality"
    generator.w_avg_estimated = estimated
    return generator


def rosinality_channel_multiplier(generator: nn.Module) -> int | None:
    """The `channel_multiplier` that rosinality's Generator would need, or None if its widths differ."""
    synthesis = generator.synthesis
    widths = {res: getattr(synthesis, f"b{res}").out_channels for res in synthesis.block_resolutions}
    for multiplier in (1, 2, 4):
        table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * multiplier, 128: 128 * multiplier,
                 256: 64 * multiplier, 512: 32 * multiplier, 1024: 16 * multiplier}
        if all(table.get(res) == c for res, c in widths.items()):
            return multiplier
    return None


def export_rosinality(generator: nn.Module) -> tuple[dict, list[str]]:
    """Our StyleGAN2 network -> `{'g_ema': state_dict, 'latent_avg': w_avg}` plus notes on anything lost.

    Raises CheckpointError for networks the layout cannot express (StyleGAN3, conditional, other
    architectures); notes cover what rosinality's own Generator class cannot rebuild.
    """
    if getattr(generator, "kind", None) != "stylegan2":
        raise CheckpointError("only StyleGAN2 generators have a rosinality layout; this one is "
                              f"{getattr(generator, 'kind', type(generator).__name__)}")
    kwargs = generator.init_kwargs
    arch = kwargs.get("architecture", "skip")
    problems = []
    if arch != "skip":
        problems.append(f"architecture {arch!r} (rosinality has only 'skip')")
    if generator.c_dim:
        problems.append("a class-conditional mapping")
    if generator.z_dim != generator.w_dim:
        problems.append(f"z_dim {generator.z_dim} != w_dim {generator.w_dim}")
    if generator.img_channels != 3:
        problems.append(f"{generator.img_channels} image channels")
    if tuple(kwargs.get("resample_filter", ROSINALITY_FILTER)) != ROSINALITY_FILTER:
        problems.append("a resample filter other than [1, 3, 3, 1]")
    mapping = generator.mapping
    if any(getattr(mapping, f"fc{i}").out_features != generator.w_dim for i in range(mapping.num_layers)):
        problems.append("mapping layers narrower than w_dim")
    if problems:
        raise CheckpointError("the rosinality layout cannot express this generator: " + "; ".join(problems))
    notes = []
    if kwargs.get("conv_clamp", 256) is not None:
        notes.append("rosinality applies no activation clamp (this generator clamps at "
                     f"{kwargs.get('conv_clamp', 256)}); renders differ only where activations exceed it")
    if rosinality_channel_multiplier(generator) is None:
        notes.append("rosinality's Generator class cannot build these channel widths; sgtool loads the file")
    lr_mul = float(mapping.fc0.bias_gain)
    state = generator.state_dict()
    resolutions = list(generator.synthesis.block_resolutions[1:])
    out = {}
    for ros, nv in name_pairs(mapping.num_layers, resolutions):
        tensor = state[nv]
        if nv.startswith("mapping.fc") and not math.isclose(lr_mul, ROSINALITY_LR_MLP):
            # rosinality's lr_mlp is fixed at 0.01: rescale so the effective weights are unchanged.
            tensor = tensor * (lr_mul / ROSINALITY_LR_MLP)
        out[ros] = _rosinality_shape(ros, tensor)
    kernel = torch.tensor(ROSINALITY_FILTER, dtype=torch.float32)
    kernel = torch.outer(kernel, kernel)
    kernel = kernel / kernel.sum() * 4
    for k in range(len(resolutions)):
        out[f"convs.{2 * k}.conv.blur.kernel"] = kernel.clone()
        out[f"to_rgbs.{k}.upsample.kernel"] = kernel.clone()
    latent_avg = generator.mapping.w_avg.detach().to("cpu", torch.float32).contiguous().clone()
    return {"g_ema": out, "latent_avg": latent_avg}, notes
