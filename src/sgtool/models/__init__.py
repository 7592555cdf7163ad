"""Pure nn.Modules and checkpoint loading (no CLI or output-file code)."""

from .builtin import BUILTIN_GENERATORS, build_builtin, builtin_model_warning
from .factory import ARCH_PRESETS, build_generator, describe_generator, generator_from_state_dict, load_state
from .formats import save_generator
from .loading import load_generator

__all__ = [
    "ARCH_PRESETS", "BUILTIN_GENERATORS", "build_builtin", "build_generator", "builtin_model_warning",
    "describe_generator", "generator_from_state_dict", "load_generator", "load_state", "save_generator",
]
