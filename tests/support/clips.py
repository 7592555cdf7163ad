"""A real photograph moved by a known smooth motion plus jitter, with a tone as its audio track.

`make_clip` is shared by the video tests and bench/bench_video.py.
"""

from __future__ import annotations

import subprocess
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

# The astronaut's FFHQ quad centre and side in skimage's 512x512 photo (measured with sgtool's aligner).
FACE_CENTRE = np.array([224.6, 106.0])


@dataclass
class Clip:
    path: Path
    frames: int
    fps: Fraction
    size: int
    offsets: np.ndarray  # [T, 2] smooth translation of the face (frame pixels)
    angles: np.ndarray  # [T] smooth rotation (degrees, counter-clockwise on screen)
    jitter: np.ndarray  # [T, 2] random per-frame translation added on top


def smooth_motion(frames: int, size: int, amplitude: float = 0.08, max_angle: float = 6.0):
    t = np.arange(frames) / max(frames - 1, 1)
    offsets = np.stack([amplitude * size * np.sin(np.pi * t), -0.5 * amplitude * size * (1 - np.cos(np.pi * t))], 1)
    angles = max_angle * np.sin(np.pi * t)
    return offsets, angles


def render_frame(photo: np.ndarray, size: int, scale: float, offset, angle: float) -> np.ndarray:
    """The photo scaled, rotated by `angle` about the face and moved so the face sits at centre + offset."""
    matrix = cv2.getRotationMatrix2D((float(FACE_CENTRE[0]), float(FACE_CENTRE[1])), angle, scale)
    matrix[:, 2] += np.array([size / 2, size / 2]) + np.asarray(offset) - FACE_CENTRE
    return cv2.warpAffine(photo, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def write_tone(path: Path, seconds: float, rate: int = 16000, freq: float = 440.0) -> Path:
    samples = (0.3 * 32767 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


def make_clip(folder: Path, frames: int = 14, size: int = 160, fps: Fraction = Fraction(12), scale: float = 0.55,
              jitter_px: float = 2.5, seed: int = 0, audio: bool = True, name: str = "clip.mp4") -> Clip:
    import skimage.data

    from sgtool.pipelines.shared.video_io import VideoWriter, ffmpeg_exe

    folder = Path(folder)
    photo = skimage.data.astronaut()
    offsets, angles = smooth_motion(frames, size)
    jitter = np.random.default_rng(seed).uniform(-jitter_px, jitter_px, (frames, 2))
    silent = folder / f"silent_{name}"
    with VideoWriter(silent, size, size, fps, crf=12) as writer:
        for t in range(frames):
            writer.write(render_frame(photo, size, scale, offsets[t] + jitter[t], angles[t]))
    path = folder / name
    if audio:
        tone = write_tone(folder / "tone.wav", frames / float(fps) + 0.5)
        subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-i", str(silent), "-i", str(tone), "-map", "0:v",
                        "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest", str(path)], check=True)
        silent.unlink()
    else:
        silent.rename(path)
    return Clip(path, frames, Fraction(fps), size, offsets, angles, jitter)
