"""Settings of every subcommand: typed models (defaults, ranges, help), YAML and --set loading."""

from .base import (Checkpoint, Cli, Output, Renamed, Settings, config_path, defaults_yaml, load_settings,
                   read_config_file)
from .commands import (AlignSettings, ConvertSettings, GenerateSettings, InfoSettings, InvertSettings, PtiOptions,
                       TuneSettings)
from .common import ClipModelOptions, EditOptions, InversionOptions, Mask, Projector, Runtime, Smoothing
from .edit import (BoundarySettings, EditSettings, LocalOptions, MixSettings, SefaSettings,
                   StyleclipDirectionsSettings)
from .training import TrainEncoderSettings
from .translate import TranslateSettings
from .video import ClipOptions, ExpandFovSettings, VideoSettings

# Command as typed -> its settings model (configs/<command with dashes>.yaml is generated from it).
COMMAND_SETTINGS: dict[str, type[Settings]] = {
    "generate": GenerateSettings, "info": InfoSettings, "convert": ConvertSettings, "align": AlignSettings,
    "invert": InvertSettings, "tune": TuneSettings, "edit": EditSettings, "mix": MixSettings,
    "directions sefa": SefaSettings, "directions boundary": BoundarySettings,
    "directions styleclip": StyleclipDirectionsSettings, "video": VideoSettings, "expand-fov": ExpandFovSettings,
    "train-encoder": TrainEncoderSettings, "translate": TranslateSettings,
}

__all__ = [
    "COMMAND_SETTINGS", "AlignSettings", "BoundarySettings", "Checkpoint", "Cli", "ClipModelOptions", "ClipOptions",
    "ConvertSettings", "EditOptions", "EditSettings", "ExpandFovSettings", "GenerateSettings", "InfoSettings",
    "InversionOptions", "InvertSettings", "LocalOptions", "Mask", "MixSettings", "Output", "Projector", "PtiOptions",
    "Renamed", "Runtime", "SefaSettings", "Settings", "Smoothing", "StyleclipDirectionsSettings",
    "TrainEncoderSettings", "TranslateSettings", "TuneSettings", "VideoSettings", "config_path", "defaults_yaml",
    "load_settings", "read_config_file",
]
