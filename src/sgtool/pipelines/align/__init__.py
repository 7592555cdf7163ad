"""`sgtool align` as a library: every face of a photo, its FFHQ-aligned and unaligned crops and the landmarks
transform between them.

    faces = align_image(rgb_uint8, size=1024)      # largest first: .aligned, .crop, .transform, .quad ...
    summary = align_batch(["photos/"], AlignSettings(outdir="out/align"))

Modules: faces (mediapipe detection and mesh), geometry (quads, transforms, resampling), run (images and
batches, alignment.json).
"""

from ..shared.transforms import load_alignment
from .geometry import (apply_transform, crop_from_quad, crop_quad_from, generator_to_pixels, key_points,
                       pixels_to_generator, quad_from_landmarks, quad_side, source_to_quad, transform_between,
                       transform_parameters)
from .run import (DEFAULT_MIN_FACE, SUMMARY_FILE, AlignedFace, align_batch, align_file, align_image,
                  align_landmarks, save_landmarks_transforms)

__all__ = ["DEFAULT_MIN_FACE", "SUMMARY_FILE", "AlignedFace", "align_batch", "align_file", "align_image",
           "align_landmarks", "apply_transform", "crop_from_quad", "crop_quad_from", "generator_to_pixels",
           "key_points", "load_alignment", "pixels_to_generator", "quad_from_landmarks", "quad_side",
           "save_landmarks_transforms", "source_to_quad", "transform_between", "transform_parameters"]
