"""Random-weight open_clip models for the text-edit tests: the real ViT-B-32 layout and a tiny one (one
transformer block per tower, 512 features like ViT-B-32) that renders-and-encodes hundreds of images fast."""

from __future__ import annotations

import torch

from sgtool.editing.clip_text import TINY_TEST_CLIP

TINY_CLIP = TINY_TEST_CLIP


def random_clip(model="ViT-B-32", seed: int = 0):
    """(open_clip CLIP network in eval mode, its tokenizer) with random weights."""
    from sgtool.editing.clip_text import build_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network, tokenizer = build_clip(model)
    return network.eval(), tokenizer
