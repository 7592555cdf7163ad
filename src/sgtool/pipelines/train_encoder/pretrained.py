"""Backbone initialisation as the references do it: IR-SE50 from the ArcFace net (its first conv's
RGB weights into the first three input channels), ResNet-34 from torchvision's ImageNet weights."""

from __future__ import annotations

import torch
from torch import nn

from ...errors import CheckpointError, SgtoolError
from ...settings import TrainEncoderSettings

RESNET34_UNITS = (3, 4, 6, 3)


def default_backbone_weights(settings: TrainEncoderSettings) -> str:
    return "resnet34-imagenet" if settings.arch == "hyperstyle" or settings.backbone == "resnet34" \
        else "arcface-ir-se50"


def _read(path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read backbone weights {path} as a weights-only state dict "
                              f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds no state dict")
    return state


def load_backbone(encoder: nn.Module, settings: TrainEncoderSettings) -> str:
    """Copy the pretrained backbone into `encoder` (heads stay random); returns the weights used."""
    from ...hub import resolve_reference

    if settings.width != 1:
        raise SgtoolError(f"--width {settings.width}: the released backbones are full width; train a narrower "
                          "encoder with --backbone-init random")
    reference = settings.backbone_weights or default_backbone_weights(settings)
    path = resolve_reference(reference, kind="backbone")
    state = _read(path)
    ours = encoder.state_dict()
    if "input_layer.0.weight" in ours:  # IR-SE
        if "input_layer.0.weight" not in state:
            raise CheckpointError(f"{path} is not an ArcFace IR-SE50 state dict (no input_layer.0.weight)")
        picked = {k: v for k, v in state.items() if k.startswith(("input_layer.", "body.")) and k in ours}
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
        raise CheckpointError(f"{path} does not fit the {settings.backbone} backbone ({', '.join(wrong[:3])})")
    encoder.load_state_dict(picked, strict=False)
    return str(path)
