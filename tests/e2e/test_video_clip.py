"""The synthetic test clip itself: decoding, encoding and audio muxing it is built with."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from support.clips import make_clip, render_frame


def test_clip_round_trip(tmp_path):
    from sgtool.pipelines.shared.video_io import audio_streams, count_frames, decode_frames, probe

    clip = make_clip(tmp_path, frames=6, size=96, fps=Fraction(30000, 1001))
    info = probe(clip.path)
    assert (info.width, info.height) == (96, 96)
    assert info.fps == Fraction(30000, 1001)
    assert info.has_audio and audio_streams(clip.path) == ["aac"]
    assert count_frames(clip.path) == 6
    frames = list(decode_frames(clip.path))
    assert len(frames) == 6 and frames[0].shape == (96, 96, 3) and frames[0].dtype == np.uint8
    # The decoded frame is the rendered one up to H.264 error.
    import skimage.data

    expected = render_frame(skimage.data.astronaut(), 96, 0.55, clip.offsets[2] + clip.jitter[2], clip.angles[2])
    assert np.abs(frames[2].astype(int) - expected).mean() < 4
