"""Tiny random-weight generators built from a seed: the offline default for demos and tests.

They render smooth abstract patterns, not faces; they exist so that every command can run
end to end without downloading a checkpoint.
"""

from __future__ import annotations

import torch

from ..hub.registry import BUILTIN_GENERATOR_NAMES
from .factory import build_generator

_TINY = dict(z_dim=32, w_dim=32, c_dim=0, img_resolution=64, img_channels=3, mapping_kwargs={"num_layers": 2})

BUILTIN_GENERATORS = {
    "tiny-stylegan3-t": ("stylegan3", dict(_TINY, channel_base=1024, channel_max=32)),
    "tiny-stylegan3-r": ("stylegan3", dict(_TINY, channel_base=1024, channel_max=32, conv_kernel=1,
                                           use_radial_filters=True)),
    "tiny-stylegan2": ("stylegan2", dict(_TINY, channel_base=1024, channel_max=32)),
}
assert tuple(BUILTIN_GENERATORS) == BUILTIN_GENERATOR_NAMES  # the hub resolves these names to themselves


def builtin_model_warning(network, what: str) -> str | None:
    """The warning to show when `network` names a built-in random-weight test model (None otherwise)."""
    if str(network) not in BUILTIN_GENERATORS:
        return None
    return (f"{network} is a built-in random-weight TEST model: {what} will not mean anything. Pass --network "
            "with the generator your latents came from.")


def build_builtin(name: str, seed: int = 0):
    kind, kwargs = BUILTIN_GENERATORS[name]
    # Our own RNG stream: building a test model must not disturb the caller's seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = build_generator(kind, kwargs)
        _make_lively(generator)
    generator.is_test_model = True
    return generator


@torch.no_grad()
def _make_lively(generator, target_std: float = 0.4) -> None:
    """Default init maps every z to nearly the same flat picture: spread the styles so seeds differ,
    then scale the RGB layers (the output is linear in them) to a visible contrast."""
    for name, param in generator.named_parameters():
        if name.endswith("affine.weight"):
            param.add_(torch.randn_like(param) * 0.5)
    if generator.kind == "stylegan3":
        generator.synthesis.input.affine.weight.normal_(0, 0.3)
    images = generator(torch.randn(32, generator.z_dim), None)
    scale = target_std / float(images.std(dim=(1, 2, 3)).median())
    for name, param in generator.named_parameters():
        if "torgb" in name or name.startswith(f"synthesis.{getattr(generator.synthesis, 'layer_names', [''])[-1]}."):
            if not name.split(".")[-2] == "affine":
                param.mul_(scale)
