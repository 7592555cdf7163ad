"""`sgtool video` stages 1-2 on a real photograph moved by a known motion: tracking, smoothing, gaps, errors."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
from support.clips import make_clip, render_frame

from sgtool.errors import SgtoolError
from sgtool.pipelines.align import transform_parameters
from sgtool.pipelines.smoothing import Smoothing, jitter
from sgtool.pipelines.video import VideoPipeline, VideoSettings, quad_params
from sgtool.pipelines.video_io import VideoWriter

# Stages 1-2 never load the encoder; the path only has to be recorded.
UNUSED_ENCODER = "encoder-not-loaded.pt"


def _pipeline(path, outdir, **settings):
    return VideoPipeline(path, outdir, UNUSED_ENCODER, VideoSettings(size=64, **settings))


def test_alignment_follows_the_motion_and_smoothing_removes_jitter(tmp_path):
    clip = make_clip(tmp_path, frames=16, size=160, jitter_px=2.5)
    pipeline = _pipeline(clip.path, tmp_path / "run")
    track = pipeline.track()
    assert track.found.all() and (track.width, track.height) == (160, 160)
    alignment, _ = pipeline.align(track, pipeline.track_key())

    raw = np.stack([quad_params(q) for q in alignment.quad_raw])
    smoothed = np.stack([quad_params(q) for q in alignment.quad])
    # Raw per-frame quads follow the real (jittered) motion of the face to about a pixel.
    moved = clip.offsets + clip.jitter
    error = (raw[:, :2] - raw[0, :2]) - (moved - moved[0])
    assert np.abs(error).mean() < 1.5
    # Smoothing: at least 3x less frame-to-frame jitter, and the smoothed quads follow the smooth motion.
    assert jitter(raw) >= 3 * jitter(smoothed)
    smooth_error = (smoothed[:, :2] - smoothed[:, :2].mean(0)) - (clip.offsets - clip.offsets.mean(0))
    assert np.abs(smooth_error).max() < 3.0
    # The landmarks transform carries the known rotation (plus the photo's own constant tilt).
    angles = np.array([transform_parameters(t)[0] for t in alignment.transform])
    residual = angles - clip.angles
    assert np.abs(residual - residual.mean()).max() < 1.5
    np.testing.assert_allclose(alignment.inverse_transform @ alignment.transform, np.broadcast_to(np.eye(3), (16, 3, 3)),
                               atol=1e-9)

    record = json.loads((tmp_path / "run" / "alignment.json").read_text())
    assert len(record["frames"]) == 16 and record["frames_without_face"] == []
    first = record["frames"][0]
    assert set(first) >= {"frame", "quad_raw", "quad", "transform", "inverse_transform", "face_found"}
    np.testing.assert_allclose(first["quad"], alignment.quad[0])
    assert len(list((tmp_path / "run" / "frames" / "aligned").glob("*.png"))) == 16

    # A second pipeline on the same directory re-uses both stages.
    again = _pipeline(clip.path, tmp_path / "run")
    again.align(again.track(), again.track_key())
    assert again.stages["track"]["cached"] and again.stages["align"]["cached"]
    # A different smoothing window re-aligns but keeps the tracking.
    other = _pipeline(clip.path, tmp_path / "run", landmark_smoothing=Smoothing(window=5))
    other.align(other.track(), other.track_key())
    assert other.stages["track"]["cached"] and not other.stages["align"]["cached"]


def test_frames_without_a_face_are_filled_from_neighbours(tmp_path):
    import skimage.data

    photo = skimage.data.astronaut()
    fps = Fraction(10)
    path = tmp_path / "gap.mp4"
    with VideoWriter(path, 128, 128, fps) as writer:
        for t in range(7):
            frame = render_frame(photo, 128, 0.45, (1.5 * t, 0.0), 0.0)
            if t in (3, 4):
                frame = np.full_like(frame, 90)  # the face is gone (a cut to a blank frame)
            writer.write(frame)
    pipeline = _pipeline(path, tmp_path / "run", min_face_size=24)
    alignment, _ = pipeline.align(pipeline.track(), pipeline.track_key())
    assert alignment.found.tolist() == [True, True, True, False, False, True, True]
    centres = alignment.quad_raw.mean(axis=1)[:, 0]
    assert centres[2] < centres[3] < centres[4] < centres[5]  # interpolated across the gap
    record = json.loads((tmp_path / "run" / "alignment.json").read_text())
    assert record["frames_without_face"] == [3, 4]
    assert record["frames"][3]["face_found"] is False and record["frames"][3]["quad_raw"] is None


def test_a_clip_without_any_face_fails_clearly(tmp_path):
    from typer.testing import CliRunner

    from sgtool.cli import app

    path = tmp_path / "noise.mp4"
    rng = np.random.default_rng(0)
    with VideoWriter(path, 64, 64, Fraction(8)) as writer:
        for _ in range(3):
            writer.write(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    with pytest.raises(SgtoolError, match="no face found in any of the 3 frames"):
        _pipeline(path, tmp_path / "lib").track()
    result = CliRunner().invoke(app, ["video", str(path), "--encoder", str(tmp_path / "e.pt"), "--outdir",
                                      str(tmp_path / "cli"), "--size", "64", "--device", "cpu"])
    assert result.exit_code == 2
    assert "no face found" in result.output
    assert not (tmp_path / "cli" / "output.mp4").exists()


def test_edit_ramp_fades_in_smoothly(tmp_path):
    clip = make_clip(tmp_path, frames=3, size=96, fps=Fraction(10), audio=False)
    pipeline = _pipeline(clip.path, tmp_path / "run", edit_ramp=0.5)
    factors = [pipeline.ramp(t) for t in range(8)]
    assert factors[0] == 0 and factors[5:] == [1, 1, 1]
    assert all(a < b for a, b in zip(factors[:6], factors[1:6]))
    assert _pipeline(clip.path, tmp_path / "run2").ramp(0) == 1.0
