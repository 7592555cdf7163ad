"""Face alignment throughput on this CPU: faces per second at 1024 output, split by stage.

Inputs are built in memory: skimage's astronaut (one face, 512x512) and a 1600x1100 group photo with six
scaled/rotated copies of it. Each row is the median of several runs; `x total` is the stage's share of
the full align_image time for the same input, measured in the same run.
"""

from __future__ import annotations


import cv2
import numpy as np
import skimage.data

from sgtool.pipelines.align import align_image, crop_from_quad, crop_quad_from, key_points, quad_from_landmarks
from sgtool.pipelines.align.faces import FaceFinder
from timing import median_seconds

SIZE = 1024
REPEATS = 3
MIN_FACE = 24


def timeit(fn):
    return median_seconds(fn, REPEATS)


def group_photo(face: np.ndarray) -> np.ndarray:
    canvas = np.full((1100, 1600, 3), 96, np.uint8)
    for scale, angle, (x, y) in [(1.0, 0, (20, 20)), (0.6, 20, (600, 40)), (0.45, -30, (1000, 60)),
                                 (0.35, 10, (1300, 500)), (0.5, -15, (600, 600)), (0.3, 35, (150, 700))]:
        side = int(512 * scale)
        matrix = cv2.getRotationMatrix2D((256.0, 256.0), angle, scale)
        matrix[:, 2] += side / 2 - 256
        canvas[y:y + side, x:x + side] = cv2.warpAffine(face, matrix, (side, side))
    return canvas


def main():
    finder = FaceFinder()  # starts both mediapipe graphs (they run once on a blank image)
    astronaut = skimage.data.astronaut()
    rows = []
    for name, image in (("astronaut 512x512", astronaut), ("group 1600x1100", group_photo(astronaut))):
        detections = finder.detect(image, min_face_size=MIN_FACE)
        faces = finder.find(image, min_face_size=MIN_FACE)
        count = len(faces)
        quads = [quad_from_landmarks(*key_points(f.landmarks)) for f in faces]
        total = timeit(lambda: align_image(image, size=SIZE, min_face_size=MIN_FACE, finder=finder))
        detect = timeit(lambda: finder.detect(image, min_face_size=MIN_FACE))
        mesh = timeit(lambda: [finder.mesh(image, d) for d in detections])
        confirm = timeit(lambda: [finder.confirmed(finder.upright_crop(image, d)[0]) for d in detections])
        render = timeit(lambda: [crop_from_quad(image, q, SIZE) for q in quads])
        render_crop = timeit(lambda: [crop_from_quad(image, crop_quad_from(q), SIZE) for q in quads])
        for stage, seconds in (("align_image (all)", total), ("  detector pyramid", detect),
                               ("  face mesh", mesh), ("  confirmation pass", confirm),
                               ("  aligned warp x4 + Lanczos", render),
                               ("  unaligned crop warp", render_crop)):
            rows.append((name, count, stage, seconds, count / seconds if seconds > 0 else float("inf"),
                         seconds / total))
    print(f"faces per second at {SIZE}x{SIZE} output (FFHQ recipe, 4x supersampled warp), median of {REPEATS}")
    print(f"{'input':<20} {'faces':>5}  {'stage':<30} {'median s':>9} {'faces/s':>8} {'x total':>8}")
    for name, count, stage, seconds, rate, share in rows:
        print(f"{name:<20} {count:>5}  {stage:<30} {seconds:>9.3f} {rate:>8.2f} {share:>8.2f}")
    finder.close()


if __name__ == "__main__":
    main()
