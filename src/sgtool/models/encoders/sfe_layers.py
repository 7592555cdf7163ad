"""Where a feature-space encoder's F lives in a generator: choosing the layer, reading its activation and
rendering with F in its place, for StyleGAN2 (block `bR`, its second convolution's output) and StyleGAN3
(layer `L<i>_<size>_<channels>`, margins included).

The layer is SFE's choice scaled to any generator: 1/16 of the output side (64 px of 1024), never under 16 px.
At that scale F holds about as many numbers as the picture has pixels, so it keeps the identity and background
detail a W+ code loses, while every layer after it still renders texture from w and an edit's change of F
stays a coarse map the feature editor can learn. For StyleGAN3 it is the last layer sampled at that rate
(L6 of a 1024 px config, 84 px with its margins), as SFE takes the last 64 px convolution of StyleGAN2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import CheckpointError


@dataclass(frozen=True)
class FeatureLayer:
    name: str  # "b64" (StyleGAN2) or a StyleGAN3 layer name such as "L6_84_1024"
    channels: int
    size: int  # spatial side of the activation (StyleGAN3's includes the margins)
    rate: int = 0  # the pixels of it that span the image (StyleGAN3: its sampling rate; 0: all of `size`)

    @property
    def margin(self) -> int:
        """Pixels on each side beyond the image (StyleGAN3's margins)."""
        return (self.size - self.rate) // 2 if self.rate else 0


def default_layer_resolution(generator) -> int:
    return max(int(generator.img_resolution) // 16, 16)


def feature_layers(generator) -> list[FeatureLayer]:
    """Every layer whose activation can be replaced, in rendering order."""
    synthesis = generator.synthesis
    if generator.kind == "stylegan2":
        blocks = [(res, getattr(synthesis, f"b{res}")) for res in synthesis.block_resolutions]
        return [FeatureLayer(f"b{res}", int(block.conv1.out_channels), int(res))
                for res, block in blocks if hasattr(block, "conv1")]
    if generator.kind == "stylegan3":
        layers = [(name, getattr(synthesis, name)) for name in synthesis.layer_names]
        return [FeatureLayer(name, int(layer.out_channels), int(layer.out_size[0]), int(layer.out_sampling_rate))
                for name, layer in layers if not layer.is_torgb]
    raise CheckpointError(f"feature-space encoders need a StyleGAN2 or StyleGAN3 generator, not {generator.kind}")


def choose_feature_layer(generator, requested: str | int | None = None) -> FeatureLayer:
    """The layer named (`b64`, `L6_84_1024`, or a resolution), or the default rule above."""
    layers = feature_layers(generator)
    if requested is None or str(requested).isdigit():
        resolution = int(requested) if requested is not None else default_layer_resolution(generator)
        if generator.kind == "stylegan2":
            found = [layer for layer in layers if layer.name == f"b{resolution}"]
        else:
            found = [layer for layer in layers if layer.rate == resolution][-1:]
    else:
        found = [layer for layer in layers if layer.name == str(requested)]
    if not found:
        names = ", ".join(layer.name for layer in layers)
        raise CheckpointError(f"feature layer {requested or default_layer_resolution(generator)} is not one of this "
                              f"{generator.kind} generator's layers ({names})")
    return found[0]


def layer_key(generator, layer: FeatureLayer):
    """How the synthesis network names `layer` in `stop_at` / `replace`."""
    return int(layer.name[1:]) if generator.kind == "stylegan2" else layer.name


def _aligned(generator, kwargs: dict) -> dict:
    """StyleGAN3 renders the aligned view (the identity transform) unless told otherwise, never whatever its input
    buffer last held: F belongs to the aligned crop."""
    if generator.kind == "stylegan3" and kwargs.get("transform") is None:
        kwargs = {**kwargs, "transform": torch.eye(3, device=generator.mapping.w_avg.device)}
    return kwargs


def generator_feature(generator, ws: torch.Tensor, layer: FeatureLayer, **kwargs) -> torch.Tensor:
    """The generator's activation at `layer` for W+ codes, noise as stored."""
    return generator.synthesis(ws, noise_mode="const", stop_at=layer_key(generator, layer), **_aligned(generator,
                                                                                                         kwargs))


def render_with_feature(generator, ws: torch.Tensor, feature: torch.Tensor, layer: FeatureLayer,
                        **kwargs) -> torch.Tensor:
    """The image of `ws` with `feature` in place of the generator's own activation at `layer` (StyleGAN2's
    to-RGB skip up to that block still comes from the codes)."""
    return generator.synthesis(ws, noise_mode="const", replace={layer_key(generator, layer): feature},
                               **_aligned(generator, kwargs))
