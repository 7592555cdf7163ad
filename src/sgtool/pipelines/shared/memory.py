"""Bounded memory for high-resolution synthesis: channel chunks and activation checkpointing.

A 1024 px StyleGAN3 layer's 2x/4x-upsampled intermediates are several GB each for all channels at
once. Every op of a layer after the input's modulation is per output channel, so running the layer
in chunks of output channels is exact; with gradients on, each chunk is also recomputed in backward
instead of stored. StyleGAN2 blocks are checkpointed whole.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Collection
from pathlib import Path

import torch
from torch import nn

# Working-set budget for one StyleGAN3 layer's upsampled intermediate (per chunk of output channels).
CHUNK_BYTES = 256 * 2 ** 20


@contextlib.contextmanager
def activation_checkpointing(generator: nn.Module, enabled: bool = True, chunk_bytes: int = CHUNK_BYTES,
                             layers: Collection[str] | None = None):
    """Bound the memory of high-resolution synthesis, for training and for plain renders.

    StyleGAN3 layers run in chunks of output channels (every op in a layer after the input's
    modulation is per output channel, so chunks are exact): a 1024 px layer's 2x/4x-upsampled
    intermediates are several GB each for all channels at once. With gradients on, each chunk is
    also recomputed in backward instead of stored. StyleGAN2 blocks are checkpointed whole.
    `layers` (names of synthesis children) limits this to those; None means all.
    The wrappers live on the instances and are removed on exit.
    """
    wrapped = []
    if enabled:
        for name, child in generator.synthesis.named_children():
            if layers is not None and name not in layers:
                continue
            if generator.kind == "stylegan3":
                if child is generator.synthesis.input:
                    continue
                child.forward = functools.partial(_chunked_sg3_layer, child, _channel_chunk(child, chunk_bytes))
            else:
                child.forward = functools.partial(_checkpointed, child.forward)
            wrapped.append(child)
    try:
        yield generator
    finally:
        for child in wrapped:
            del child.forward


def recomputable_bytes(generator: nn.Module, batch: int, compiled_kernels: bool, device_type: str) -> dict[str, int]:
    """Estimated bytes that checkpointing each synthesis layer (StyleGAN2: block) would spare in one backward.

    A checkpointed layer still keeps its input, so what it spares is what autograd saves inside it:
    for a StyleGAN3 layer, the compiled filtered_lrelu's codes (a byte per upsampled sample on CUDA, two
    bits on CPU) or, with the reference ops, about four float32 tensors at the upsampled size; for a
    StyleGAN2 block, about four float32 tensors per convolution output.
    """
    sizes = {}
    for name, child in generator.synthesis.named_children():
        if generator.kind == "stylegan3":
            if child is generator.synthesis.input:
                continue
            up_rows, up_cols = _upsampled_shape(child)
            if not compiled_kernels:
                per_sample = 16 * up_rows * up_cols
            else:
                per_sample = up_rows * (up_cols if device_type == "cuda" else (up_cols + 3) // 4)
            sizes[name] = batch * child.out_channels * per_sample
        else:
            convs = [layer for layer in (getattr(child, "conv0", None), child.conv1) if layer is not None]
            sizes[name] = batch * sum(16 * layer.out_channels * layer.resolution ** 2 for layer in convs)
    return sizes


def layers_to_recompute(sizes: dict[str, int], budget_bytes: int | None) -> list[str]:
    """The fewest layers, largest first, whose checkpointing brings the rest of `sizes` within the budget.
    An unknown budget (None) recomputes every layer."""
    if budget_bytes is None:
        return list(sizes)
    chosen, kept = [], sum(sizes.values())
    for name in sorted(sizes, key=sizes.get, reverse=True):
        if kept <= budget_bytes:
            break
        chosen.append(name)
        kept -= sizes[name]
    return chosen


def available_memory(device: torch.device) -> int | None:
    """Bytes this process can still allocate on `device` (Linux: MemAvailable within any cgroup limit)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        free = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    try:  # a container's own limit (cgroup v2) can be far below the machine's
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            free = min(free, int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return max(free, 0)


def _upsampled_shape(layer) -> tuple[int, int]:
    """(rows, columns) of a StyleGAN3 layer's padded, upsampled plane per channel (an upper bound)."""
    return (max(1, int(layer.in_size[1]) * layer.up_factor + layer.padding[2] + layer.padding[3]),
            max(1, int(layer.in_size[0]) * layer.up_factor + layer.padding[0] + layer.padding[1]))


def _channel_chunk(layer, chunk_bytes: int) -> int:
    rows, cols = _upsampled_shape(layer)
    return max(1, min(layer.out_channels, chunk_bytes // (4 * rows * cols)))


class _OutputSlice:
    """A SynthesisLayer seen through a slice of its output channels (weights and bias sliced, rest shared)."""

    def __init__(self, layer, start: int, stop: int):
        self._layer = layer
        self.weight = layer.weight[start:stop]
        self.bias = layer.bias[start:stop]
        self.out_channels = stop - start

    def __getattr__(self, name):
        return getattr(self._layer, name)


def _layer_slice(layer, start, stop, x, w, kwargs):
    return type(layer).forward(_OutputSlice(layer, start, stop), x, w, **kwargs)


def _chunked_sg3_layer(layer, chunk: int, x, w, **kwargs):
    if kwargs.get("update_emas") or chunk >= layer.out_channels:
        return _checkpointed(type(layer).forward.__get__(layer), x, w, **kwargs)
    from torch.utils.checkpoint import checkpoint

    parts = []
    for start in range(0, layer.out_channels, chunk):
        stop = min(start + chunk, layer.out_channels)
        if torch.is_grad_enabled():
            parts.append(checkpoint(_layer_slice, layer, start, stop, x, w, kwargs, use_reentrant=False))
        else:
            parts.append(_layer_slice(layer, start, stop, x, w, kwargs))
    return torch.cat(parts, dim=1)


def _checkpointed(forward, *args, **kwargs):
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    from torch.utils.checkpoint import checkpoint

    return checkpoint(forward, *args, use_reentrant=False, **kwargs)
