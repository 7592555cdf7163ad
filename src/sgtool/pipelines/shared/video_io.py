"""Video decoding, encoding and audio copying with the ffmpeg binary bundled by imageio-ffmpeg.

Frames are streamed one at a time through pipes (never a whole clip in memory). The output keeps the
source's frame rate as an exact rational (29.97 is written as 30000/1001), so frame count, fps and
duration of an output match its input.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from ...errors import SgtoolError
from ...utils.io import atomic_path

# Audio codecs that mp4 players handle; others (PCM from WAV/MOV, Vorbis...) are re-encoded to AAC.
MP4_AUDIO_CODECS = ("aac", "mp3", "ac3", "eac3", "alac", "opus")
# Rates that ffmpeg prints rounded (29.97) but that are really k * 1000/1001.
_NTSC_BASES = (24, 30, 48, 60, 120, 240)
# The largest frames a clip may have: every stage holds a few decoded frames (and their crops) in memory, and
# one 16000x16000 RGB frame alone is 768 MB. 8K (7680x4320, 8192x4320) passes.
MAX_FRAME_SIDE = 8192
MAX_FRAME_PIXELS = 40_000_000


class _RotatedSizeNote(logging.Filter):
    """imageio-ffmpeg warns when the frames it reads differ in size from the stream's stored size; that is what
    ffmpeg's autorotation of a phone clip (a display matrix of +-90 degrees) does on purpose, so the note is
    dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is different from the source frame size" not in record.getMessage()


logging.getLogger("imageio_ffmpeg").addFilter(_RotatedSizeNote())


def ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg
    except ImportError:  # pragma: no cover - a hard dependency
        raise SgtoolError("imageio-ffmpeg is needed for video input/output; run `pip install imageio-ffmpeg`") from None
    return imageio_ffmpeg.get_ffmpeg_exe()


def exact_fps(value: float) -> Fraction:
    """The rational frame rate behind ffmpeg's printed value (23.98 / 29.97 / 59.94 -> k*1000/1001)."""
    if value <= 0 or not np.isfinite(value):
        raise SgtoolError(f"invalid frame rate {value}")
    for base in _NTSC_BASES:
        ntsc = Fraction(base * 1000, 1001)
        if abs(value - float(ntsc)) < 0.006:
            return ntsc
    return Fraction(value).limit_denominator(1001)


@dataclass
class VideoInfo:
    path: Path
    width: int
    height: int
    fps: Fraction
    duration: float  # seconds, as the container reports it
    audio_codec: str | None
    variable_fps: bool = False  # frames are not evenly spaced: decode them resampled to `fps` (decode_frames(fps=))

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None

    def record(self) -> dict:
        return {"path": str(self.path), "width": self.width, "height": self.height, "fps": float(self.fps),
                "fps_rational": f"{self.fps.numerator}/{self.fps.denominator}", "duration": self.duration,
                "audio_codec": self.audio_codec, "variable_fps": self.variable_fps}


def _check_input(path: Path) -> None:
    if not path.exists():
        raise SgtoolError(f"{path}: no such file; pass a video file ffmpeg can read (mp4, mov, mkv, webm, avi...)")
    if path.is_dir():
        raise SgtoolError(f"{path} is a directory; pass a video file")


def _header(path: Path) -> str:
    """ffmpeg's listing of a file's streams (it reads the container's header, decodes no frame)."""
    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True,
                          errors="replace").stderr


def _video_line(header: str) -> str | None:
    for line in header.splitlines():
        if re.search(r"Stream #\S+.*?: Video: ", line):
            return line
    return None


def base_rate(header: str, average: float) -> tuple[float, bool]:
    """The rate to read frames at, and whether the stream's frame rate is variable.

    ffmpeg lists a stream's average rate ("fps") and its base rate ("tbr", the rate its timestamps step by).
    They differ in a variable frame rate clip (a phone's, a screen recording): it is read at the base rate
    (frames repeated where the clip has gaps) so that frame count / rate is its duration, or at the average
    rate where the base rate is implausible (over 120, under the average, or 1.5 times it and more, as the
    field rate of an interlaced clip is).
    """
    line = _video_line(header) or ""
    match = re.search(r" (\d+(?:\.\d+)?)(k?) tbr", line)
    if not match:
        return average, False
    tbr = float(match.group(1)) * (1000 if match.group(2) else 1)
    if abs(tbr - average) <= 0.01 * max(average, 1e-9) or abs(float(exact_fps(tbr)) - average) < 0.006:
        return average, False
    return (tbr if average <= tbr <= min(120.0, 1.5 * average) else average), True


def stored_frame_size(header: str) -> tuple[int, int] | None:
    """(width, height) of the first video stream as stored, from ffmpeg's stream listing; None if not listed."""
    line = _video_line(header)
    match = re.search(r" (\d{1,6})x(\d{1,6})[, \[]", line + " ") if line else None
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_frame_size(path: Path, width: int, height: int) -> None:
    """Refuse frames over MAX_FRAME_SIDE on a side or MAX_FRAME_PIXELS in all, before any is decoded."""
    if max(width, height) <= MAX_FRAME_SIDE and width * height <= MAX_FRAME_PIXELS:
        return
    scale = "scale=-2:2160" if width >= height else "scale=2160:-2"
    raise SgtoolError(f"{path}: its frames are {width}x{height} ({width * height / 1e6:.1f} megapixels), over the "
                      f"limit of {MAX_FRAME_SIDE} px on a side and {MAX_FRAME_PIXELS / 1e6:.0f} megapixels; "
                      f"downscale it first, e.g. ffmpeg -i {path} -vf {scale} smaller.mp4")


def probe(path: str | os.PathLike) -> VideoInfo:
    """Size, frame rate, duration and audio codec of a video (reads only the header).

    The size is that of the frames as decoded: ffmpeg applies a phone clip's rotation (its display matrix),
    so a portrait clip stored as landscape +-90 degrees reads as portrait. Frames over the size limit
    (check_frame_size) are refused here, before any is decoded.
    """
    import imageio_ffmpeg

    path = Path(path)
    _check_input(path)
    header = _header(path)
    stored = stored_frame_size(header)
    if stored is not None:
        check_frame_size(path, *stored)
    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = next(reader)
    except (OSError, RuntimeError, StopIteration) as exc:
        if audio_streams(path) and not _video_streams(path):
            raise SgtoolError(f"{path} has no video stream (only audio); pass a video file") from None
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise SgtoolError(f"cannot decode {path} as a video ({reason[:200]}); pass a file ffmpeg can read") from None
    finally:
        reader.close()
    width, height = meta["size"]
    fps = float(meta.get("fps") or 0)
    if fps <= 0:
        raise SgtoolError(f"{path}: ffmpeg reports no frame rate; pass --fps to resample it to a fixed rate")
    fps, variable = base_rate(header, fps)
    return VideoInfo(path=path, width=int(width), height=int(height), fps=exact_fps(fps),
                     duration=float(meta.get("duration") or 0.0), audio_codec=meta.get("audio_codec"),
                     variable_fps=variable)


def decode_frames(path: str | os.PathLike, start: float = 0.0, end: float | None = None,
                  max_frames: int | None = None, fps: Fraction | float | None = None) -> Iterator[np.ndarray]:
    """Stream uint8 HxWx3 RGB frames of [start, end) seconds, resampled to `fps` when given."""
    import imageio_ffmpeg

    path = Path(path)
    _check_input(path)
    input_params = ["-ss", f"{start:.6f}"] if start > 0 else []
    output_params = []
    if end is not None:
        output_params += ["-t", f"{end - max(start, 0.0):.6f}"]
    if fps is not None:
        output_params += ["-vf", f"fps={Fraction(fps).numerator}/{Fraction(fps).denominator}"]
    if max_frames is not None:
        output_params += ["-frames:v", str(int(max_frames))]
    reader = imageio_ffmpeg.read_frames(str(path), input_params=input_params, output_params=output_params)
    try:
        meta = next(reader)
        width, height = meta["size"]
        for buffer in reader:
            yield np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 3)
    except (OSError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise SgtoolError(f"decoding {path} failed ({reason[:200]})") from None
    finally:
        reader.close()


class VideoWriter:
    """H.264 mp4 writer fed one uint8 frame at a time; the file appears under its name only when closed.

    Even sizes use yuv420p (plays everywhere); odd sizes, which 4:2:0 cannot hold, use yuv444p so the
    frame size is kept exactly.
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: Fraction, crf: int = 18,
                 preset: str = "medium"):
        import imageio_ffmpeg

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.width, self.height = int(width), int(height)
        self.frames = 0
        self._tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp.mp4")
        pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        self._gen = imageio_ffmpeg.write_frames(
            str(self._tmp), (self.width, self.height), fps=Fraction(fps), codec="libx264", pix_fmt_out=pix_fmt,
            quality=None, macro_block_size=1, ffmpeg_log_level="error",
            output_params=["-crf", str(int(crf)), "-preset", preset, "-movflags", "+faststart"])
        self._gen.send(None)

    def write(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if frame.shape != (self.height, self.width, 3):
            raise ValueError(f"{self.path.name}: frame is {frame.shape}, writer expects {(self.height, self.width, 3)}")
        self._gen.send(frame)
        self.frames += 1

    def close(self, ok: bool = True) -> None:
        """Finish the file (ok) or throw it away (not ok, or no frame was written)."""
        if self._gen is None:
            return
        gen, self._gen = self._gen, None
        try:
            gen.close()
            if ok and self.frames:
                os.replace(self._tmp, self.path)
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(ok=exc_type is None)
        return False


def _run_ffmpeg(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([ffmpeg_exe(), "-y", "-v", "error", *args], capture_output=True, text=True)


def mux_audio(video: str | os.PathLike, source: str | os.PathLike, out: str | os.PathLike, start: float = 0.0,
              duration: float | None = None) -> str:
    """Write `out` = `video`'s picture + the source's first audio stream over [start, start+duration).

    The audio is stream-copied when its codec plays in mp4 players (MP4_AUDIO_CODECS), else re-encoded
    to AAC. Returns "copied" or "aac".
    """
    codecs = audio_streams(source)
    if not codecs:
        raise SgtoolError(f"{source} has no audio stream to copy")
    attempts = [(["-c:a", "aac", "-b:a", "192k"], "aac")]
    if codecs[0] in MP4_AUDIO_CODECS:
        attempts.insert(0, (["-c:a", "copy"], "copied"))
    trim_in = ["-ss", f"{start:.6f}"] if start > 0 else []
    trim_out = ["-t", f"{duration:.6f}"] if duration is not None else []
    last_error = ""
    with atomic_path(out) as tmp:
        for codec, mode in attempts:
            result = _run_ffmpeg(["-i", str(video), *trim_in, "-i", str(source), "-map", "0:v:0", "-map", "1:a:0",
                                  "-c:v", "copy", *codec, *trim_out, "-movflags", "+faststart", "-f", "mp4",
                                  str(tmp)])
            if result.returncode == 0:
                return mode
            last_error = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise SgtoolError(f"could not add the audio of {source} to {out} ({last_error[:200]})")


def count_frames(path: str | os.PathLike) -> int:
    """Exact number of video frames (decodes the whole stream)."""
    import imageio_ffmpeg

    return int(imageio_ffmpeg.count_frames_and_secs(str(path))[0])


def _streams(path: str | os.PathLike, kind: str) -> list[str]:
    """Codec names of every `kind` (Audio, Video) stream in a file, from ffmpeg's stream listing."""
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    return re.findall(rf"Stream #\S+.*?: {kind}: (\w+)", result.stderr)


def audio_streams(path: str | os.PathLike) -> list[str]:
    """Codec names of every audio stream in a file."""
    return _streams(path, "Audio")


def _video_streams(path: str | os.PathLike) -> list[str]:
    return _streams(path, "Video")
