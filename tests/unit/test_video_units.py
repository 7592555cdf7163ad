"""Pieces of `sgtool video` without the encoder: smoothing, paste-back, tracking helpers, video I/O."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from pydantic import ValidationError

from sgtool.errors import SgtoolError
from sgtool.pipelines.align import crop_from_quad
from sgtool.pipelines.edit.paste import MaskSettings, head_mask, paste
from sgtool.pipelines.shared.smoothing import Smoothing, jitter, smooth, smooth_into
from sgtool.pipelines.video import (
    FaceTracker,
    fill_missing,
    nearest_found,
    quad_from_params,
    quad_global,
    quad_local,
    quad_params,
)
from sgtool.pipelines.shared.video_io import VideoWriter, audio_streams, count_frames, decode_frames, mux_audio, probe


# ---------------------------------------------------------------------------------------------------------
# Smoothing


def test_gaussian_is_zero_phase_keeps_frames_and_linear_motion():
    t = np.arange(40, dtype=np.float64)
    line = np.stack([3.0 * t + 1, -0.5 * t], axis=1)
    out = smooth(line, Smoothing(window=9))
    assert out.shape == line.shape
    # A constant-velocity motion passes unchanged, ends included (no lag, no pull-back at the ends).
    np.testing.assert_allclose(out, line, atol=1e-9)
    # Mirror ends freeze the motion instead: the last frame is pulled back.
    mirrored = smooth(line, Smoothing(window=9, ends="reflect"))
    assert mirrored[-1, 0] < line[-1, 0] - 1.0


def test_gaussian_removes_jitter_without_lag():
    rng = np.random.default_rng(1)
    t = np.arange(120) / 30.0
    clean = np.sin(2 * np.pi * 0.4 * t)[:, None] * 20
    noisy = clean + rng.normal(0, 1.0, clean.shape)
    out = smooth(noisy, Smoothing(window=9))
    assert jitter(out) < jitter(noisy) / 5
    # Zero phase: the cross-correlation with the clean signal peaks at lag 0.
    lags = range(-4, 5)
    corr = [np.dot(np.roll(out[:, 0], k)[8:-8], clean[8:-8, 0]) for k in lags]
    assert list(lags)[int(np.argmax(corr))] == 0
    # The end frames are smoothed too (not copied from the noisy input).
    assert abs(out[0, 0] - clean[0, 0]) < abs(noisy[0, 0] - clean[0, 0]) or abs(out[0, 0] - clean[0, 0]) < 0.6


def test_one_euro_forward_backward_has_no_lag():
    t = np.arange(90) / 30.0
    clean = (np.sin(2 * np.pi * 0.5 * t) * 10)[:, None]
    noisy = clean + np.random.default_rng(2).normal(0, 0.5, clean.shape)
    out = smooth(noisy, Smoothing(method="one_euro", min_cutoff=1.5, beta=0.01), fps=30.0)
    assert out.shape == noisy.shape
    assert jitter(out) < jitter(noisy) / 3
    lags = range(-5, 6)
    corr = [np.dot(np.roll(out[:, 0], k)[10:-10], clean[10:-10, 0]) for k in lags]
    assert list(lags)[int(np.argmax(corr))] == 0


def test_smooth_into_matches_smooth_and_settings_are_checked():
    x = np.random.default_rng(3).normal(size=(17, 3, 5)).astype(np.float32)
    out = np.empty_like(x)
    smooth_into(x, out, Smoothing(window=5), block=4)
    np.testing.assert_allclose(out, smooth(x, Smoothing(window=5)), atol=1e-5)
    np.testing.assert_array_equal(smooth(x, Smoothing(method="none")), x)
    for bad in ({"window": 4}, {"method": "kalman"}, {"ends": "wrap"}):
        with pytest.raises(ValidationError):
            Smoothing(**bad)


# ---------------------------------------------------------------------------------------------------------
# Stage keys, quads, gap filling, tracking


def test_every_clip_setting_is_in_the_key_of_the_stage_it_changes():
    from sgtool.pipelines.video import CLIP_STAGES, NOT_KEYED
    from sgtool.settings import ClipOptions

    keyed = [name for stage in CLIP_STAGES for name in stage.keyed_by]
    assert len(keyed) == len(set(keyed))
    assert sorted(keyed + list(NOT_KEYED)) == sorted(ClipOptions.model_fields)


def test_fine_layers_default_to_stylegan3_editings_share():
    from sgtool.pipelines.video.clip import default_fine_layers

    assert default_fine_layers(16) == list(range(9, 16))
    assert default_fine_layers(18) == list(range(10, 18))
    assert default_fine_layers(14) == list(range(8, 14))


def test_quad_params_round_trip_and_local_coordinates():
    centre, x = np.array([50.0, 40.0]), np.array([20.0, 5.0])
    quad = quad_from_params(np.concatenate([centre, x]))
    np.testing.assert_allclose(quad_params(quad), np.concatenate([centre, x]))
    points = np.array([[45.0, 30.0], [60.0, 52.0]])
    np.testing.assert_allclose(quad_global(quad, quad_local(quad, points)), points)
    # Corners sit at +-0.5 in the quad's own coordinates.
    np.testing.assert_allclose(quad_local(quad, quad[[0, 2]]), [[-0.5, -0.5], [0.5, 0.5]], atol=1e-12)


def test_fill_missing_interpolates_and_holds_the_ends():
    found = np.array([False, True, False, False, True, False])
    params = np.zeros((6, 1))
    params[1], params[4] = 10, 40
    filled = fill_missing(params, found)[:, 0]
    np.testing.assert_allclose(filled, [10, 10, 20, 30, 40, 40])
    assert nearest_found(found).tolist() == [1, 1, 1, 4, 4, 4]


def test_tracker_follows_the_face_it_started_with():
    big = np.array([0, 0, 100, 100.0])
    small = np.array([150, 0, 200, 50.0])
    tracker = FaceTracker(face_index=1, lost_after=2)
    assert tracker.choose([(big, None), (small, None)]) == 1  # by index at the start
    # Next frame the small face grew and moved slightly: still the same track though it is now listed first.
    moved = small + [4, 2, 10, 8]
    assert tracker.choose([(moved, None), (big, None)]) == 0
    assert tracker.choose([(big, None)]) is None  # only the other face: a gap, not a switch


# ---------------------------------------------------------------------------------------------------------
# Paste-back


def _photo(size=160):
    import cv2
    import skimage.data

    return cv2.resize(skimage.data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)


def _landmarks(frame):
    from sgtool.pipelines.align.faces import default_finder

    return default_finder().find(frame)[0].landmarks


def test_paste_of_the_own_crop_is_seamless_and_leaves_the_outside_untouched():
    frame = _photo()
    landmarks = _landmarks(frame)
    centre = landmarks.mean(axis=0)
    half = np.ptp(landmarks, axis=0).max() * 1.1
    crop_quad = np.array([centre + [-half, -half], centre + [-half, half], centre + [half, half],
                          centre + [half, -half]])
    crop = crop_from_quad(frame, crop_quad, 256)
    mask, roi = head_mask(landmarks, frame.shape, MaskSettings())
    out = paste(frame, crop, crop_quad, mask, roi)
    full = np.zeros(frame.shape[:2], np.float32)
    y0, y1, x0, x1 = roi
    full[y0:y1, x0:x1] = mask
    # Outside the mask: bit-identical. Inside: the resampled crop lands where it came from.
    assert np.array_equal(out[full == 0], frame[full == 0])
    inside = full > 0.99
    assert inside.sum() > 300
    import cv2

    # Two resamplings blur a little; shifted by half a pixel it would match clearly worse.
    blurred = cv2.GaussianBlur(frame, (0, 0), 0.8)
    error = np.abs(out[inside].astype(int) - blurred[inside]).mean()
    assert error < 3
    for shift in ([0.5, 0], [0, 0.5], [-0.5, 0], [0, -0.5]):
        moved = cv2.warpAffine(blurred, np.float32([[1, 0, shift[0]], [0, 1, shift[1]]]), frame.shape[1::-1])
        assert np.abs(out[inside].astype(int) - moved[inside]).mean() > error + 0.3
    # A flat grey crop really replaces the face under the mask (and only there).
    grey = np.full_like(crop, 128)
    painted = paste(frame, grey, crop_quad, mask, roi)
    assert np.abs(painted[inside].astype(int) - 128).max() <= 1
    assert np.array_equal(painted[full == 0], frame[full == 0])
    # The mask covers the face: mesh points are inside it.
    pts = np.round(landmarks).astype(int)
    assert full[pts[:, 1], pts[:, 0]].min() > 0.5


def test_mask_reaches_zero_a_few_feathers_outside():
    frame = _photo()
    landmarks = _landmarks(frame)
    settings = MaskSettings(feather=0.05, grow=0.0, forehead=0.0)
    mask, (y0, y1, x0, x1) = head_mask(landmarks, frame.shape, settings)
    full = np.zeros(frame.shape[:2], np.float32)
    full[y0:y1, x0:x1] = mask
    left = int(landmarks[:, 0].min())
    size = np.sqrt(np.ptp(landmarks[:, 0]) * np.ptp(landmarks[:, 1]))
    assert full[:, : max(0, int(left - 4 * settings.feather * size) - 2)].max() == 0
    with pytest.raises(ValidationError):
        MaskSettings(feather=-1)


# ---------------------------------------------------------------------------------------------------------
# Video I/O


def test_writer_keeps_odd_sizes_and_ntsc_rates(tmp_path):
    fps = Fraction(24000, 1001)
    frames = [np.full((35, 47, 3), v, np.uint8) for v in (10, 120, 240)]
    with VideoWriter(tmp_path / "odd.mp4", 47, 35, fps) as writer:
        for frame in frames:
            writer.write(frame)
    info = probe(tmp_path / "odd.mp4")
    assert (info.width, info.height, info.fps) == (47, 35, fps)
    decoded = list(decode_frames(tmp_path / "odd.mp4"))
    assert len(decoded) == 3 and np.abs(decoded[1].astype(int) - 120).max() <= 2
    assert count_frames(tmp_path / "odd.mp4") == 3


def test_interrupted_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with VideoWriter(tmp_path / "gone.mp4", 16, 16, Fraction(10)) as writer:
            writer.write(np.zeros((16, 16, 3), np.uint8))
            raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []


def test_audio_is_copied_or_reencoded_and_trimmed(tmp_path):
    from support.clips import write_tone

    with VideoWriter(tmp_path / "v.mp4", 32, 32, Fraction(10)) as writer:
        for _ in range(10):
            writer.write(np.zeros((32, 32, 3), np.uint8))
    # A WAV (PCM) cannot be stream-copied into mp4: it is re-encoded to AAC.
    tone = write_tone(tmp_path / "tone.wav", 3.0)
    assert mux_audio(tmp_path / "v.mp4", tone, tmp_path / "with_pcm.mp4", start=0.5, duration=1.0) == "aac"
    # An AAC track is copied as it is.
    assert mux_audio(tmp_path / "v.mp4", tmp_path / "with_pcm.mp4", tmp_path / "copied.mp4", duration=1.0) == "copied"
    for name in ("with_pcm.mp4", "copied.mp4"):
        info = probe(tmp_path / name)
        assert audio_streams(tmp_path / name) == ["aac"]
        assert abs(info.duration - 1.0) < 0.1
        assert count_frames(tmp_path / name) == 10


def test_unreadable_inputs_are_clear_errors(tmp_path):
    with pytest.raises(SgtoolError, match="no such file"):
        probe(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(SgtoolError, match="cannot decode"):
        probe(junk)


def test_selfie_segmentation_widens_the_mask_near_the_head_only():
    from sgtool.pipelines.edit.paste import SelfieSegmenter

    frame = _photo()
    landmarks = _landmarks(frame)
    segmenter = SelfieSegmenter()
    try:
        person = segmenter(frame)
    finally:
        segmenter.close()
    assert person.shape == frame.shape[:2]
    centre = np.round(landmarks.mean(axis=0)).astype(int)
    assert person[centre[1], centre[0]] > 0.5  # the astronaut is a person
    settings = MaskSettings(feather=0.0, grow=0.0, forehead=0.0, selfie=True, selfie_reach=0.3)
    everywhere = np.ones(frame.shape[:2], np.float32)
    plain, (y0, y1, x0, x1) = head_mask(landmarks, frame.shape, settings)
    wide, roi = head_mask(landmarks, frame.shape, settings, person=everywhere)
    full_plain = np.zeros(frame.shape[:2], np.float32)
    full_plain[y0:y1, x0:x1] = plain
    full_wide = np.zeros(frame.shape[:2], np.float32)
    full_wide[roi[0]:roi[1], roi[2]:roi[3]] = wide
    assert (full_wide > 0.5).sum() > 1.3 * (full_plain > 0.5).sum()
    # ... but only within reach of the head: the frame's corners stay outside.
    assert full_wide[0, 0] == 0 and full_wide[-1, -1] == 0 and full_wide[-1, 0] == 0
