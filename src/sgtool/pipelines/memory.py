"""Bounded memory for high-resolution synthesis: channel chunks and activation checkpointing.

A 1024 px StyleGAN3 layer's 2x/4x-upsampled intermediates are several GB each for all channels at
once. Every op of a layer after the input's modulation is per output channel, so running the layer
in chunks of output channels is exact; with gradients on, each chunk is also recomputed in backward
instead of stored. StyleGAN2 blocks are checkpointed whole.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn

# Working-set budget for one StyleGAN3 layer's upsampled intermediate (per chunk of output channels).
CHUNK_BYTES = 256 * 2 ** 20


@contextlib.contextmanager
def activation_checkpointing(generator: nn.Module, enabled: bool = True, chunk_bytes: int = CHUNK_BYTES):
    """Bound the memory of high-resolution synthesis, for training and for plain renders.

    StyleGAN3 layers run in chunks of output channels (every op in a layer after the input's
    modulation is per output channel, so chunks are exact): a 1024 px layer's 2x/4x-upsampled
    intermediates are several GB each for all channels at once. With gradients on, each chunk is
    also recomputed in backward instead of stored. StyleGAN2 blocks are checkpointed whole.
    The wrappers live on the instances and are removed on exit.
    """
    wrapped = []
    if enabled:
        for child in generator.synthesis.children():
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


def _channel_chunk(layer, chunk_bytes: int) -> int:
    side = max(1, int(layer.in_size.max()) * layer.up_factor + layer.padding[0] + layer.padding[1])
    return max(1, min(layer.out_channels, chunk_bytes // (4 * side * side)))


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
