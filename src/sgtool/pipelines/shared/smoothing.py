"""Zero-phase temporal filters for per-frame signals (face quads, W+ latents).

Every filter here keeps every frame and does not lag: the Gaussian is a symmetric kernel applied to the
whole sequence at once, and the one-euro filter runs forward and then backward over the forward result
(as filtfilt does), so its delays cancel. At the ends, where a symmetric window does not fit, the
Gaussian becomes a Gaussian-weighted local linear fit over the frames that exist (in the interior the
two are identical): a face moving at the start or end of a clip keeps its velocity instead of being
pulled back or frozen, and the end frames are still smoothed.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.ndimage

from ...settings.common import Smoothing

__all__ = ["Smoothing", "gaussian_kernel", "jitter", "smooth", "smooth_into"]


def gaussian_kernel(window: int) -> np.ndarray:
    if window <= 1:
        return np.ones(1)
    sigma = window / 4.0
    offsets = np.arange(window) - window // 2
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def _pad_time(x: np.ndarray, pad: int, ends: str) -> np.ndarray:
    widths = [(pad, pad)] + [(0, 0)] * (x.ndim - 1)
    if ends == "nearest" or x.shape[0] == 1:
        return np.pad(x, widths, mode="edge")
    if ends == "reflect":
        return np.pad(x, widths, mode="symmetric")
    # linear: the odd (point-symmetric) reflection continues a constant velocity past the ends.
    return np.pad(x, widths, mode="reflect", reflect_type="odd")


def _gaussian(x: np.ndarray, spec: Smoothing) -> np.ndarray:
    kernel = gaussian_kernel(spec.window)
    pad = len(kernel) // 2
    if pad == 0:
        return x.copy()
    padded = _pad_time(x, pad, spec.ends)
    out = scipy.ndimage.correlate1d(padded, kernel, axis=0, mode="constant")[pad:pad + x.shape[0]]
    if spec.ends == "linear":
        frames = x.shape[0]
        for t in sorted(set(range(min(pad, frames))) | set(range(max(0, frames - pad), frames))):
            out[t] = _local_linear(x, t, kernel, pad)
    return out


def _local_linear(x: np.ndarray, t: int, kernel: np.ndarray, pad: int) -> np.ndarray:
    """Value at frame t of the kernel-weighted least-squares line through the frames within the window."""
    lo, hi = max(0, t - pad), min(x.shape[0], t + pad + 1)
    d = np.arange(lo, hi, dtype=np.float64) - t
    w = kernel[lo - t + pad:hi - t + pad]
    s0, s1, s2 = w.sum(), (w * d).sum(), (w * d * d).sum()
    t0 = w @ x[lo:hi]
    t1 = (w * d) @ x[lo:hi]
    det = s0 * s2 - s1 * s1
    if det <= 1e-12 * max(s0 * s2, 1e-30):
        return t0 / s0
    return (s2 * t0 - s1 * t1) / det


def _alpha(cutoff, period: float):
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / period)


def _one_euro_pass(x: np.ndarray, spec: Smoothing, period: float) -> np.ndarray:
    out = np.empty_like(x)
    out[0] = x[0]
    dx_hat = np.zeros_like(x[0])
    a_d = _alpha(spec.d_cutoff, period)
    for t in range(1, x.shape[0]):
        dx = (x[t] - out[t - 1]) / period
        dx_hat = dx_hat + a_d * (dx - dx_hat)
        cutoff = spec.min_cutoff + spec.beta * np.abs(dx_hat)
        out[t] = out[t - 1] + _alpha(cutoff, period) * (x[t] - out[t - 1])
    return out


def _one_euro(x: np.ndarray, spec: Smoothing, fps: float) -> np.ndarray:
    period = 1.0 / fps
    # Warm-up frames beyond each end (padded like the Gaussian's) so the state has settled at frame 0 / T-1.
    pad = max(1, min(x.shape[0] - 1, int(round(fps / spec.min_cutoff))))
    padded = _pad_time(x, pad, spec.ends)
    forward = _one_euro_pass(padded, spec, period)
    both = _one_euro_pass(forward[::-1], spec, period)[::-1]
    return both[pad:pad + x.shape[0]]


def smooth(x, spec: Smoothing, fps: float = 30.0) -> np.ndarray:
    """Smooth `x` ([T, ...]) along time; returns float64 of the same shape (every frame kept)."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] == 0:
        return x.copy()
    if spec.method == "none" or x.shape[0] == 1:
        return x.copy()
    flat = x.reshape(x.shape[0], -1)
    out = _gaussian(flat, spec) if spec.method == "gaussian" else _one_euro(flat, spec, fps)
    return out.reshape(x.shape)


def smooth_into(x: np.ndarray, out: np.ndarray, spec: Smoothing, fps: float = 30.0, block: int = 2048) -> np.ndarray:
    """smooth() over a large [T, ...] array (e.g. a memory-mapped latents file) in column blocks."""
    frames = x.shape[0]
    src = x.reshape(frames, -1)
    dst = out.reshape(frames, -1)
    for start in range(0, src.shape[1], block):
        dst[:, start:start + block] = smooth(np.asarray(src[:, start:start + block]), spec, fps)
    return out


def jitter(x) -> float:
    """Mean magnitude of the second difference over time (acceleration): ~0 for smooth motion."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] < 3:
        return 0.0
    second = x[2:] - 2 * x[1:-1] + x[:-2]
    return float(np.mean(np.abs(second)))
