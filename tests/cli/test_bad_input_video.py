"""Bad or unusual input clips through `sgtool video`: refused up front with one line, or processed to the end.

Every clip is made here with the bundled ffmpeg from samples/astronaut.jpg (192 px, 4-5 frames); the models
are the random test models. Each run has a time-out, so a hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

import numpy as np
import pytest

from sgtool.demo import SAMPLE, build_test_models, make_clip
from sgtool.pipelines.shared.video_io import (MAX_FRAME_SIDE, count_frames, decode_frames, ffmpeg_exe, probe)

RUN_TIMEOUT = 120  # seconds; a run that hangs fails here


def _ffmpeg(*args) -> None:
    subprocess.run([ffmpeg_exe(), "-y", "-v", "error", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("badvideo")
    models = build_test_models(folder / "models")
    clip = make_clip(SAMPLE, folder / "clip.mp4", seconds=0.5, fps=8, size=192)  # 4 frames, 192x192
    return {"dir": folder, "models": models, "clip": clip}


def _video(inputs, clip, outdir, *extra):
    models = inputs["models"]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sgtool", "video", str(clip), "-e", models.encoder, "-n",
                           models.network, "--encoder-steps", "1", "--outputs", "output", "-o", str(outdir),
                           "--device", "cpu", *extra],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=inputs["dir"])
    return done, time.perf_counter() - start


def _check(done, code: int, *needles: str) -> str:
    text = done.stderr.strip()
    assert done.returncode == code, text
    assert "Traceback" not in text, text
    if code != 0:
        assert len(text.splitlines()) == 1, text
    for needle in needles:
        assert needle in text, (needle, text)
    return text


def _summary(outdir) -> dict:
    return json.loads((outdir / "video.json").read_text())


def test_huge_frames_are_refused_before_any_is_decoded(inputs):
    big = inputs["dir"] / "huge.avi"
    _ffmpeg("-f", "lavfi", "-i", "color=gray:s=16000x16000:r=2", "-frames:v", "1", "-c:v", "mjpeg", "-q:v", "31",
            big)
    outdir = inputs["dir"] / "out-huge"
    done, seconds = _video(inputs, big, outdir)
    _check(done, 2, str(big.name), "16000x16000", f"{MAX_FRAME_SIDE} px", "megapixels", "-vf scale=")
    assert seconds < 30  # refused from the header (the whole run is the CLI's start-up), not after a time-out
    assert not (outdir / "cache").exists() or not any((outdir / "cache").iterdir())


def _portrait(inputs):
    """The clip cropped to an upright portrait, 144x192."""
    upright = inputs["dir"] / "upright.mp4"
    if not upright.exists():
        _ffmpeg("-i", inputs["clip"], "-vf", "crop=144:192", "-c:v", "libx264", "-c:a", "copy", upright)
    return upright


def _phone_clip(inputs, rotation: int):
    """The upright portrait stored turned (as a phone does) with only its display matrix saying how to turn it
    back; `-display_rotation` is counter-clockwise."""
    turn = {90: "transpose=clock", -90: "transpose=cclock", 180: "hflip,vflip"}[rotation]
    stored, rotated = inputs["dir"] / f"stored{rotation}.mp4", inputs["dir"] / f"phone{rotation}.mp4"
    _ffmpeg("-i", _portrait(inputs), "-vf", turn, "-c:v", "libx264", "-c:a", "copy", stored)
    _ffmpeg("-display_rotation", rotation, "-i", stored, "-c", "copy", rotated)
    listing = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(rotated)], capture_output=True, text=True).stderr
    assert "displaymatrix" in listing.lower().replace(" ", "") or "Display Matrix" in listing
    return rotated


@pytest.mark.parametrize("rotation", [-90, 180])
def test_phone_clips_decode_upright(inputs, rotation):
    rotated = _phone_clip(inputs, rotation)
    info = probe(rotated)
    assert (info.width, info.height) == (144, 192)
    upright = next(decode_frames(_portrait(inputs))).astype(float)
    frame = next(decode_frames(rotated)).astype(float)
    assert frame.shape == upright.shape == (192, 144, 3)
    assert np.abs(frame - upright).mean() < 8  # the same picture (up to re-encoding), not a turned one


def test_phone_clip_rotated_90_comes_out_upright(inputs):
    rotated = _phone_clip(inputs, 90)
    outdir = inputs["dir"] / "out-phone"
    done, _ = _video(inputs, rotated, outdir, "--max-frames", "2")
    text = _check(done, 0, "wrote output.mp4")
    assert "different from the source frame size" not in text  # imageio-ffmpeg's note on autorotation is dropped
    summary = _summary(outdir)
    assert summary["frames"] == 2 and summary["frame_size"] == [144, 192] and summary["frames_without_face"] == []
    out = probe(outdir / "output.mp4")
    assert (out.width, out.height) == (144, 192)


def test_variable_frame_rate_clip_is_read_at_its_base_rate(inputs):
    vfr = inputs["dir"] / "vfr.mp4"  # frames at 0, 0.125, 0.35, 0.475 s: a gap after the second
    _ffmpeg("-i", inputs["clip"], "-vf", "setpts='(N/8+if(gte(N,2),0.1,0))/TB'", "-fps_mode", "vfr",
            "-c:v", "libx264", "-c:a", "copy", vfr)
    assert probe(vfr).variable_fps and probe(vfr).fps == 8
    outdir = inputs["dir"] / "out-vfr"
    done, _ = _video(inputs, vfr, outdir)
    _check(done, 0, "wrote output.mp4")
    summary = _summary(outdir)
    assert summary["fps"] == 8 and summary["frames"] == 5 and summary["source"]["variable_fps"]
    assert count_frames(outdir / "output.mp4") == 5  # 5 frames at 8 fps: the clip's 0.6 s, in time with its audio


def test_corrupt_bytes_in_the_middle_of_the_stream_end_cleanly(inputs):
    data = bytearray(inputs["clip"].read_bytes())
    rng = random.Random(0)
    middle = len(data) // 2
    data[middle:middle + 1500] = bytes(rng.randrange(256) for _ in range(1500))
    corrupt = inputs["dir"] / "corrupt.mp4"
    corrupt.write_bytes(bytes(data))
    outdir = inputs["dir"] / "out-corrupt"
    done, _ = _video(inputs, corrupt, outdir)
    assert done.returncode in (0, 2), done.stderr
    if done.returncode == 0:
        _check(done, 0, "wrote output.mp4")
        assert count_frames(outdir / "output.mp4") == _summary(outdir)["frames"] > 0
    else:
        _check(done, 2, corrupt.name)


def test_face_that_disappears_halfway_is_filled_from_its_neighbours(inputs):
    gone = inputs["dir"] / "gone.mp4"  # frames 2 and 3 are plain grey
    _ffmpeg("-i", inputs["clip"], "-vf", "drawbox=x=0:y=0:w=iw:h=ih:color=gray:t=fill:enable='gte(t,0.25)'",
            "-c:v", "libx264", "-c:a", "copy", gone)
    outdir = inputs["dir"] / "out-gone"
    done, _ = _video(inputs, gone, outdir)
    _check(done, 0, "no face found in 2 frame(s) (2-3)", "wrote output.mp4")
    summary = _summary(outdir)
    assert summary["frames"] == 4 and summary["frames_without_face"] == [2, 3]
    assert count_frames(outdir / "output.mp4") == 4
