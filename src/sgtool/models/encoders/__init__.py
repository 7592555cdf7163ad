"""Image encoders for GAN inversion: backbones, ReStyle encoders and checkpoint loading."""

from .backbones import ArcFaceIRSE, IRUnit, ir_body, resnet34_body
from .inverter import InversionStep, ReStyleInverter, face_pool
from .loading import (
    ENCODER_FAMILIES,
    EncoderCheckpoint,
    build_inverter,
    load_module_state,
    read_encoder_checkpoint,
    register_encoder_family,
)
from .restyle import (
    RESTYLE_ENCODERS,
    BackboneEncoder,
    ProgressiveBackboneEncoder,
    ResNetBackboneEncoder,
    ResNetProgressiveBackboneEncoder,
)

__all__ = [
    "ArcFaceIRSE", "BackboneEncoder", "ENCODER_FAMILIES", "EncoderCheckpoint", "IRUnit", "InversionStep",
    "ProgressiveBackboneEncoder", "RESTYLE_ENCODERS", "ReStyleInverter", "ResNetBackboneEncoder",
    "ResNetProgressiveBackboneEncoder", "build_inverter", "face_pool", "ir_body", "load_module_state",
    "read_encoder_checkpoint", "register_encoder_family", "resnet34_body",
]

# StyleGAN2 families (pSp/e4e, HyperStyle) register themselves in ENCODER_FAMILIES on import.
from . import hyperstyle, sg2_encoders  # noqa: E402,F401
