"""Backbone initialisation as the references do it: IR-SE50 from the ArcFace net (its first conv's
RGB weights into the first three input channels), ResNet-34 from torchvision's ImageNet weights, SFE's
iResNet-50 trunk from the ArcFace iresnet50 it starts from."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ...errors import CheckpointError
from ...models.encoders.backbones import RESNET34_UNITS
from ...models.formats import torch_load
from ...settings import TrainEncoderSettings


def default_backbone_weights(settings: TrainEncoderSettings) -> str:
    return {"resnet34": "resnet34-imagenet", "iresnet50": "arcface-iresnet50"}.get(settings.encoder_backbone,
                                                                                  "arcface-ir-se50")


IRESNET_NAMES = {"conv1.": "backbone.conv.0.", "bn1.": "backbone.conv.1.", "prelu.": "backbone.conv.2.",
                 **{f"layer{i}.": f"backbone.block_{i}." for i in range(1, 5)}}


def read_state_dict(path, what: str) -> dict[str, torch.Tensor]:
    """A weights-only state dict (a `state_dict` entry unwrapped), or one line saying what the file is not."""
    data = torch_load(Path(path))
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds no state dict; pass the {what} weights")
    return data


def load_backbone(encoder: nn.Module, settings: TrainEncoderSettings) -> str:
    """Copy the pretrained backbone into `encoder` (heads stay random); returns the weights used."""
    from ...hub import resolve_reference

    reference = settings.backbone_weights or default_backbone_weights(settings)
    path = resolve_reference(reference, kind="backbone")
    state = read_state_dict(path, "backbone")
    ours = encoder.state_dict()
    if "backbone.block_1.0.conv1.weight" in ours:  # SFE: the trunk; its heads, fuser and editor stay random
        if "layer1.0.conv1.weight" not in state:
            raise CheckpointError(f"{path} is not an ArcFace iresnet50 state dict (no layer1.0.conv1.weight)")
        picked = {new + k[len(old):]: v for k, v in state.items() for old, new in IRESNET_NAMES.items()
                  if k.startswith(old)}
    elif "input_layer.0.weight" in ours:  # IR-SE
        if "input_layer.0.weight" not in state:
            raise CheckpointError(f"{path} is not an ArcFace IR-SE50 state dict (no input_layer.0.weight)")
        # As pSp, a sketch or label-map encoder keeps its whole input layer random.
        parts = ("body.",) if settings.task in ("sketch", "segmentation") else ("input_layer.", "body.")
        picked = {k: v for k, v in state.items() if k.startswith(parts) and k in ours}
        if "input_layer.0.weight" in picked:
            conv = ours["input_layer.0.weight"].clone()
            conv[:, :3] = state["input_layer.0.weight"]
            picked["input_layer.0.weight"] = conv
    else:  # ResNet-34 body from torchvision's layerL.B names
        if "layer1.0.conv1.weight" not in state:
            raise CheckpointError(f"{path} is not a torchvision ResNet-34 state dict (no layer1.0.conv1.weight)")
        index, mapping = 0, {}
        for layer, units in enumerate(RESNET34_UNITS, 1):
            for unit in range(units):
                mapping[f"layer{layer}.{unit}."] = f"body.{index}."
                index += 1
        picked = {}
        for k, v in state.items():
            for old, new in mapping.items():
                if k.startswith(old):
                    picked[new + k[len(old):]] = v
    wrong = [k for k, v in picked.items() if k not in ours or tuple(ours[k].shape) != tuple(v.shape)]
    if wrong:
        raise CheckpointError(f"{path} does not fit the {settings.encoder_backbone} backbone ({', '.join(wrong[:3])})")
    encoder.load_state_dict(picked, strict=False)
    return str(path)
