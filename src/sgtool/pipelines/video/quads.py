"""Face quads over time: 4 parameters per frame (centre, half x-edge), so squares stay squares when the
parameters are smoothed, and the frames without a face are filled from their neighbours."""

from __future__ import annotations

import numpy as np


def quad_params(quad: np.ndarray) -> np.ndarray:
    quad = np.asarray(quad, dtype=np.float64)
    return np.concatenate([quad.mean(axis=0), (quad[3] - quad[0]) / 2])


def quad_from_params(params: np.ndarray) -> np.ndarray:
    centre, x = np.asarray(params[:2], np.float64), np.asarray(params[2:4], np.float64)
    y = np.array([-x[1], x[0]])
    return np.stack([centre - x - y, centre - x + y, centre + x + y, centre + x - y])


def _axes(quad: np.ndarray) -> np.ndarray:
    quad = np.asarray(quad, dtype=np.float64)
    return np.stack([quad[3] - quad[0], quad[1] - quad[0]], axis=1)


def quad_local(quad: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Source pixels -> the quad's own [-0.5, 0.5]^2 coordinates."""
    centre = np.asarray(quad, dtype=np.float64).mean(axis=0)
    return (np.asarray(points, np.float64) - centre) @ np.linalg.inv(_axes(quad)).T


def quad_global(quad: np.ndarray, local: np.ndarray) -> np.ndarray:
    centre = np.asarray(quad, dtype=np.float64).mean(axis=0)
    return centre + np.asarray(local, np.float64) @ _axes(quad).T


def fill_missing(params: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Linear interpolation of per-frame parameters over frames without a face; the ends hold the nearest."""
    frames = np.arange(len(found))
    out = params.copy()
    for k in range(params.shape[1]):
        out[~found, k] = np.interp(frames[~found], frames[found], params[found, k])
    return out


def nearest_found(found: np.ndarray) -> np.ndarray:
    """For every frame, the index of the nearest frame with a face (itself when it has one)."""
    idx = np.flatnonzero(found)
    if len(idx) == 1:
        return np.full(len(found), idx[0])
    frames = np.arange(len(found))
    pos = np.clip(np.searchsorted(idx, frames), 1, len(idx) - 1)
    left, right = idx[pos - 1], idx[pos]
    return np.where(frames - left <= right - frames, left, right)
