"""2-D transforms in the generator's input convention (shared by generate, align, edit, video).

Coordinates: the image spans [-0.5, 0.5] with the origin at its centre, x right, y down.
`make_transform(translate, angle)` is [[cos a, sin a, tx], [-sin a, cos a, ty], [0, 0, 1]] with
the angle in degrees (positive = counter-clockwise on screen) and t in image widths; the matrix
written to `synthesis.input.transform` is its inverse.
"""

from __future__ import annotations

import numpy as np


def make_transform(translate=(0.0, 0.0), angle: float = 0.0) -> np.ndarray:
    rad = np.deg2rad(angle)
    s, c = np.sin(rad), np.cos(rad)
    return np.array([[c, s, translate[0]], [-s, c, translate[1]], [0.0, 0.0, 1.0]])


def input_transform(translate=(0.0, 0.0), angle: float = 0.0) -> np.ndarray:
    """The matrix to place in `synthesis.input.transform` to render rotated/translated output."""
    return np.linalg.inv(make_transform(translate, angle))
