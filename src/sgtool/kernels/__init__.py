"""Low-level generator ops behind one dispatch point (`use`, `bias_act`, `upfirdn2d`, `filtered_lrelu`)."""

from .conv import conv2d_resample, modulated_conv2d_sg2, modulated_conv2d_sg3
from .dispatch import BACKENDS, bias_act, compiled_for, current_backend, filtered_lrelu, set_backend, upfirdn2d, use
from .ref import setup_filter

__all__ = [
    "BACKENDS", "bias_act", "compiled_for", "conv2d_resample", "current_backend", "filtered_lrelu",
    "modulated_conv2d_sg2", "modulated_conv2d_sg3", "set_backend", "setup_filter", "upfirdn2d", "use",
]
