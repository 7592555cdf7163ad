"""`sgtool video` stages 1-2 on a real photograph moved by a known motion: tracking, smoothing, gaps, errors."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
from support.clips import make_clip, render_frame

from sgtool.errors import SgtoolError
from sgtool.pipelines.align import transform_parameters
from sgtool.pipelines.shared.smoothing import Smoothing, jitter
from sgtool.pipelines.video import ALIGN, TRACK, Clip, quad_params, ramp_factors, run_stages
from sgtool.pipelines.shared.video_io import VideoWriter
from sgtool.settings import ClipOptions


def _align(path, outdir, **options):
    """Stages 1-2 (they need no encoder when the crop size is given); returns (alignment, stage records)."""
    clip = Clip(path, outdir, ClipOptions(size=64, **options))
    return run_stages(clip, [TRACK, ALIGN])["align"], clip.stages


def _track(path, outdir, **options):
    clip = Clip(path, outdir, ClipOptions(size=64, **options))
    return run_stages(clip, [TRACK])["track"], clip.stages


def test_alignment_follows_the_motion_and_smoothing_removes_jitter(tmp_path):
    clip = make_clip(tmp_path, frames=16, size=160, jitter_px=2.5)
    track, _ = _track(clip.path, tmp_path / "run")
    assert track.found.all() and (track.width, track.height) == (160, 160)
    alignment, stages = _align(clip.path, tmp_path / "run")
    assert stages["track"]["cached"] and not stages["align"]["cached"]

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

    record = json.loads((alignment.folder / "alignment.json").read_text())
    assert len(record["frames"]) == 16 and record["frames_without_face"] == []
    first = record["frames"][0]
    assert set(first) >= {"frame", "quad_raw", "quad", "transform", "inverse_transform", "face_found"}
    np.testing.assert_allclose(first["quad"], alignment.quad[0])
    assert len(list((alignment.folder / "aligned").glob("*.png"))) == 16
    assert not (tmp_path / "run" / "alignment.json").exists()  # published by `sgtool video` only

    # Another run on the same directory re-uses both stages.
    again, stages = _align(clip.path, tmp_path / "run")
    assert stages["track"]["cached"] and stages["align"]["cached"]
    np.testing.assert_array_equal(again.quad, alignment.quad)
    # A different smoothing window re-aligns (into its own cache entry) but keeps the tracking.
    other, stages = _align(clip.path, tmp_path / "run", landmark_smoothing=Smoothing(window=5))
    assert stages["track"]["cached"] and not stages["align"]["cached"]
    assert other.folder != alignment.folder and len(list((alignment.folder / "aligned").glob("*.png"))) == 16


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
    alignment, _ = _align(path, tmp_path / "run", min_face_size=24)
    assert alignment.found.tolist() == [True, True, True, False, False, True, True]
    centres = alignment.quad_raw.mean(axis=1)[:, 0]
    assert centres[2] < centres[3] < centres[4] < centres[5]  # interpolated across the gap
    record = json.loads((alignment.folder / "alignment.json").read_text())
    assert record["frames_without_face"] == [3, 4]
    assert record["frames"][3]["face_found"] is False and record["frames"][3]["quad_raw"] is None


def test_a_clip_without_any_face_fails_clearly(tmp_path):
    from typer.testing import CliRunner

    from sgtool.cli import app
    from sgtool.models import save_generator
    from support.golden import golden_dir, small_stylegan3_w512

    path = tmp_path / "noise.mp4"
    rng = np.random.default_rng(0)
    with VideoWriter(path, 64, 64, Fraction(8)) as writer:
        for _ in range(3):
            writer.write(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    with pytest.raises(SgtoolError, match="no face found in any of the 3 frames"):
        _track(path, tmp_path / "lib")
    encoder = golden_dir("encoders") / "BackboneEncoder_ckpt.pt"
    network = save_generator(small_stylegan3_w512(0), tmp_path / "g512.safetensors")
    result = CliRunner().invoke(app, ["video", str(path), "--encoder", str(encoder), "--network", str(network),
                                      "--outdir", str(tmp_path / "cli"), "--size", "64", "--device", "cpu"])
    assert result.exit_code == 2
    assert "no face found" in result.output
    assert not (tmp_path / "cli" / "output.mp4").exists()


def test_edit_ramp_fades_in_smoothly():
    factors = ramp_factors(range(8), 0.5, Fraction(10)).tolist()
    assert factors[0] == 0 and factors[5:] == [1, 1, 1]
    assert all(a < b for a, b in zip(factors[:6], factors[1:6]))
    assert ramp_factors([0], 0.0, Fraction(10)).tolist() == [1.0]


# ---------------------------------------------------------------------------------------------------------
# Regression tests: checkpoint names are checked before the clip is touched; tracking progress is atomic


def _offline(tmp_path):
    home = tmp_path / "sgtool_home"
    home.mkdir()
    return home, {"SGTOOL_OFFLINE": "1", "SGTOOL_HOME": str(home)}


def test_registry_encoder_is_resolved_before_any_work(tmp_path):
    """Bug 1: a registry name that is not in the cache fails at once, with one line naming it and the file
    to put in place (not a FileNotFoundError traceback after the whole clip was tracked)."""
    from typer.testing import CliRunner

    from sgtool.cli import app

    clip = make_clip(tmp_path, frames=3, size=96, audio=False)
    home, env = _offline(tmp_path)
    for command, extra in (("video", ["--size", "64"]), ("expand-fov", ["--left", "8"])):
        out = tmp_path / command
        result = CliRunner().invoke(app, [command, str(clip.path), "--encoder", "restyle-e4e-sg3-ffhq", *extra,
                                          "--outdir", str(out), "--device", "cpu"], env=env)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in result.output, result.output
        assert "restyle-e4e-sg3-ffhq" in lines[0] and str(home) in lines[0]
        assert not out.exists()  # nothing tracked, nothing cached


def test_empty_encoder_name_is_refused_before_tracking(tmp_path):
    """Bug 8: `--encoder ""` says the encoder name is empty (it used to become "." and fail as a directory)."""
    from typer.testing import CliRunner

    from sgtool.cli import app

    clip = make_clip(tmp_path, frames=3, size=96, audio=False)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["video", str(clip.path), "--encoder", "", "--size", "64", "--outdir", str(out),
                                      "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert "encoder" in result.stderr and "empty" in result.stderr and "directory" not in result.stderr
    assert not out.exists()


def test_a_kill_while_saving_tracking_progress_leaves_a_resumable_cache(tmp_path, monkeypatch):
    """Bug 7: the tracking stage's progress file is replaced atomically, so a run killed while writing it
    resumes from the previous save instead of failing on a truncated file."""
    import os

    from sgtool.pipelines.video import tracking

    clip = make_clip(tmp_path, frames=6, size=128, audio=False)
    monkeypatch.setattr(tracking, "PARTIAL_SAVE_SECONDS", 0.0)  # save after every frame
    real_savez = np.savez
    saves = []

    def killed_on_third_save(file, *args, **kwargs):
        saves.append(file)
        if len(saves) < 3:
            return real_savez(file, *args, **kwargs)
        if isinstance(file, (str, os.PathLike)):
            with open(file, "wb") as handle:
                handle.write(b"PK\x03\x04 cut short")
        else:
            file.write(b"PK\x03\x04 cut short")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", killed_on_third_save)
    with pytest.raises(KeyboardInterrupt):
        _track(clip.path, tmp_path / "run")
    monkeypatch.setattr(np, "savez", real_savez)
    resumed, stages = _track(clip.path, tmp_path / "run")
    assert stages["track"]["resumed_frames"] == 2 and not stages["track"]["cached"]
    fresh, _ = _track(clip.path, tmp_path / "fresh")
    np.testing.assert_array_equal(resumed.found, fresh.found)
    np.testing.assert_allclose(resumed.landmarks, fresh.landmarks)
