"""Random-weight open_clip models for the text-edit tests: the real ViT-B-32 layout and a tiny one (one
transformer block per tower, 512 features like ViT-B-32) that renders-and-encodes hundreds of images fast."""

from __future__ import annotations

import json
from pathlib import Path

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


def save_tiny_clip(folder: Path, templates: list[str], seed: int = 4) -> Path:
    """A random tiny CLIP as the CLI takes one: clip.safetensors, its open_clip config clip.json, templates.txt."""
    from safetensors.torch import save_file

    network, _ = random_clip(TINY_CLIP, seed=seed)
    save_file(network.state_dict(), str(folder / "clip.safetensors"))
    (folder / "clip.json").write_text(json.dumps(TINY_CLIP))
    (folder / "templates.txt").write_text("\n".join(templates) + "\n")
    return folder
