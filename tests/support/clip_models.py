"""Random-weight open_clip models for the text-edit tests: the real ViT-B-32 layout and a tiny one (one
transformer block per tower, 512 features like ViT-B-32) that renders-and-encodes hundreds of images fast."""

from __future__ import annotations

import torch

TINY_CLIP = {"embed_dim": 512,
             "vision_cfg": {"image_size": 224, "layers": 1, "width": 64, "patch_size": 32, "head_width": 32},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}


def random_clip(model="ViT-B-32", seed: int = 0):
    """(open_clip CLIP network in eval mode, its tokenizer) with random weights."""
    from sgtool.editing.clip_text import build_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network, tokenizer = build_clip(model)
    return network.eval(), tokenizer
