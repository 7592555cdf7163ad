"""`sgtool video`'s last stage: edit, render the unaligned crops, paste them back and encode the videos.

StyleGAN2 has no input transform: it renders the aligned faces, which are pasted back along their own quads.

The frames are decoded a third time and streamed: only one batch of frames is held at full size.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ...errors import SgtoolError
from ...settings import VideoSettings
from ...utils.io import to_uint8
from ..shared.images import read_image
from ..edit.paste import SelfieSegmenter, head_mask, paste
from ..shared.render import code_item, render
from .clip import Clip, Stage
from .edits import ClipEdits
from .encode import ClipVideos
from .quads import quad_global
from .stages import Alignment, renderer
from .stitch import head_mask_in_render, stitch_frame

FULL_FRAME = ("output", "side_by_side")


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size:
        return image
    interpolation = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LANCZOS4
    return cv2.resize(image, (size, size), interpolation=interpolation)


class _Paster:
    """Renders, stitches and pastes one batch of frames at a time into the selected videos."""

    def __init__(self, clip: Clip, settings: VideoSettings, generator, edits: ClipEdits, videos: ClipVideos):
        self.clip, self.settings, self.generator, self.edits, self.videos = clip, settings, generator, edits, videos
        outputs = set(settings.outputs)
        self.need_recon = "recon" in outputs or not edits
        self.need_edit = bool(edits) and bool({"output", "edited", "side_by_side"} & outputs)
        self.selfie = SelfieSegmenter() if settings.mask.selfie else None
        self.stitch_changes: list[float] = []
        self.unaligned = generator.kind == "stylegan3"

    def batch(self, frames: list[int], decoded, latents: np.ndarray, alignment: Alignment) -> None:
        ws = torch.from_numpy(np.array(latents[frames[0]:frames[-1] + 1], dtype=np.float32))
        inverse = torch.from_numpy(alignment.inverse_transform[frames].astype(np.float32)) if self.unaligned else None
        recon = render(self.generator, ws, inverse) if self.need_recon else None
        edited, edited_code = recon, ws
        if self.need_edit:
            edited_code = self.edits.edit(self.generator, ws, frames)
            edited = render(self.generator, edited_code, inverse)
        for k, t in enumerate(frames):
            frame = next(decoded, None)
            if frame is None:
                raise SgtoolError(f"{self.clip.source} yielded fewer frames than before ({t} < "
                                  f"{self.clip.frame_count}); pass --force")
            self.frame(t, frame, alignment, to_uint8(recon[k:k + 1])[0] if recon is not None else None,
                       edited[k] if edited is not None else None, code_item(edited_code, k),
                       inverse[k] if inverse is not None else None)

    def frame(self, t: int, frame: np.ndarray, alignment: Alignment, recon, edited, edited_code, inverse) -> None:
        settings, size = self.settings, self.clip.crop_size
        crop = read_image(alignment.crop_path(t))
        rendered = crop if self.unaligned else read_image(alignment.aligned_path(t))  # what the render shows
        quad = alignment.crop_quad[t] if self.unaligned else alignment.quad[t]
        landmarks = quad_global(alignment.quad[t], alignment.mask_local[t])
        person = self.selfie(frame) if self.selfie is not None else None
        mask, roi = head_mask(landmarks, frame.shape, settings.mask, person)
        edited_img = to_uint8(edited[None])[0] if edited is not None else None
        if settings.stitch_steps and self.edits and edited_img is not None:
            inside = head_mask_in_render(landmarks, quad, self.generator.img_resolution, settings.mask)
            edited_img, change = stitch_frame(self.generator, edited_code, inverse, edited, rendered, inside,
                                              settings.stitch_steps, settings.stitch_lr)
            self.stitch_changes.append(change)
        pasted = paste(frame, edited_img, quad, mask, roi) if edited_img is not None else frame
        self.videos.write("output", pasted)
        if "side_by_side" in self.videos.writers:
            self.videos.write("side_by_side", np.concatenate([frame, pasted], axis=1))
        self.videos.write("input_crops", crop)
        if recon is not None:
            self.videos.write("recon", _resize(recon, size))
        if edited_img is not None:
            self.videos.write("edited", _resize(edited_img, size))

    def close(self) -> None:
        if self.selfie is not None:
            self.selfie.close()


def render_videos(settings: VideoSettings, edits: ClipEdits):
    """The compute function of the render stage (not cached: the videos are the run's outputs)."""

    def compute(clip: Clip, entry, products: dict) -> dict:
        latents, alignment, track = products["smooth"], products["align"], products["track"]
        size = clip.crop_size
        sizes = {"output": (track.width, track.height), "side_by_side": (2 * track.width, track.height),
                 "input_crops": (size, size), "recon": (size, size), "edited": (size, size)}
        with ClipVideos(clip, {name: sizes[name] for name in settings.outputs}, FULL_FRAME) as videos:
            paster = _Paster(clip, settings, renderer(clip, products), edits, videos)
            try:
                clip.reporter.start("render + paste", clip.frame_count)
                decoded = clip.frames()
                for first in range(0, clip.frame_count, settings.batch_size):
                    frames = list(range(first, min(clip.frame_count, first + settings.batch_size)))
                    paster.batch(frames, decoded, latents, alignment)
                    clip.reporter.advance(len(frames))
                clip.reporter.finish()
                if next(decoded, None) is not None:
                    raise SgtoolError(f"{clip.source} yielded more frames than before; pass --force")
            finally:
                paster.close()
            audio = videos.close()
        clip.note(stitch_tuned=bool(paster.stitch_changes), audio=audio)
        return {"outputs": videos.outputs(), "audio": audio}

    return compute


def render_stage(settings: VideoSettings, edits: ClipEdits) -> Stage:
    return Stage("render", render_videos(settings, edits))
