"""The videos a clip's last stage writes: H.264 at the clip's exact rate, with the source's audio where asked.

Every video is written under a temporary name; `close()` gives each its name (muxing the audio of
the clip's span into the full-frame ones), `abort()` leaves nothing behind.
"""

from __future__ import annotations

import numpy as np

from ..shared.video_io import VideoWriter, mux_audio


class ClipVideos:
    def __init__(self, clip, sizes: dict[str, tuple[int, int]], with_audio: tuple[str, ...] = ()):
        self.clip = clip
        self.paths = {name: clip.outdir / f"{name}.mp4" for name in sizes}
        self.with_audio = [name for name in with_audio if name in sizes and clip.info.has_audio]
        self.writers: dict[str, VideoWriter] = {}
        options = clip.options
        try:
            for name, (width, height) in sizes.items():
                path = self.paths[name]
                target = path.with_name(f".{name}.video.mp4") if name in self.with_audio else path
                self.writers[name] = VideoWriter(target, width, height, clip.fps, crf=options.crf,
                                                 preset=options.preset)
        except BaseException:
            self.abort()
            raise

    def write(self, name: str, frame: np.ndarray | None) -> None:
        if name in self.writers and frame is not None:
            self.writers[name].write(frame)

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.close(ok=False)

    def close(self) -> str | None:
        """Finish every video; returns how the audio went in ("copied", "aac") or None (the clip has none)."""
        for writer in self.writers.values():
            writer.close()
        audio = None
        clip = self.clip
        for name in self.with_audio:
            video = self.writers[name].path
            try:
                audio = mux_audio(video, clip.source, self.paths[name], clip.options.start,
                                  clip.frame_count / float(clip.fps))
            finally:
                video.unlink(missing_ok=True)
        return audio

    def outputs(self) -> dict[str, str]:
        return {name: str(path) for name, path in self.paths.items()}

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False

