"""Test photos with real faces."""

from __future__ import annotations

import cv2
import numpy as np
import skimage.data


def two_astronauts() -> np.ndarray:
    """Two copies of the astronaut portrait (a real photo), the second smaller and tilted 15 degrees, on one wide
    grey canvas (420 x 900)."""
    astronaut = skimage.data.astronaut()
    canvas = np.full((420, 900, 3), 90, np.uint8)
    canvas[:400, :400] = cv2.resize(astronaut, (400, 400), interpolation=cv2.INTER_AREA)
    small = cv2.resize(astronaut, (300, 300), interpolation=cv2.INTER_AREA)
    tilt = cv2.getRotationMatrix2D((150, 150), 15, 1.0)
    canvas[60:360, 520:820] = cv2.warpAffine(small, tilt, (300, 300), borderValue=(90, 90, 90))
    return canvas
