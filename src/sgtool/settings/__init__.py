"""Settings of every subcommand: typed models (defaults, ranges, help), YAML and --set loading."""

from .base import Checkpoint, Cli, Output, Renamed, Settings, defaults_yaml, load_settings, read_config_file
from .commands import (COMMAND_SETTINGS, AlignSettings, ClipOptions, ConvertSettings, EditSettings,
                       ExpandFovSettings, GenerateSettings, InfoSettings, InvertSettings, PtiOptions, TrainEncoderSettings, TuneSettings,
                       VideoSettings)
from .common import EditOptions, InversionOptions, Mask, Projector, Runtime, Smoothing

__all__ = [
    "COMMAND_SETTINGS", "AlignSettings", "Checkpoint", "Cli", "ClipOptions", "ConvertSettings", "EditOptions",
    "EditSettings", "ExpandFovSettings", "GenerateSettings", "InfoSettings", "InversionOptions", "InvertSettings", "TrainEncoderSettings",
    "Mask", "Output", "Projector", "PtiOptions", "Renamed", "Runtime", "Settings", "Smoothing", "TuneSettings",
    "VideoSettings", "defaults_yaml", "load_settings", "read_config_file",
]
