"""`sgtool video` end to end with the golden ReStyle encoder: a real photograph moved over time, with audio.

The golden encoder's own decoder renders 512 px and takes several seconds per frame on a CPU, so the run
inverts into a small StyleGAN3 generator with the same latent layout (16 x 512, passed with --network,
the way a user picks the generator to edit in); the encoder (IR-SE50 pSp) is the golden one.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from support.clips import make_clip
from typer.testing import CliRunner

from support.golden import golden_dir, small_stylegan3_w512
from sgtool.cli import app
from sgtool.pipelines.shared.smoothing import jitter
from sgtool.pipelines.shared.video_io import VideoWriter, audio_streams, count_frames, decode_frames, probe

FRAMES = 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from sgtool.models import save_generator

    encoder = golden_dir("encoders") / "BackboneEncoder_ckpt.pt"
    folder = tmp_path_factory.mktemp("video")
    clip = make_clip(folder, frames=FRAMES, size=160, jitter_px=2.0)
    generator = small_stylegan3_w512(0)
    network = save_generator(generator, folder / "g512.safetensors")
    direction = folder / "age.npy"
    np.save(direction, np.random.default_rng(0).standard_normal((1, 512)).astype(np.float32))
    return clip, encoder, network, direction, folder


def _run(args):
    result = CliRunner().invoke(app, ["video", *map(str, args), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_video_end_to_end_then_reuses_its_cache(setup):
    clip, encoder, network, direction, folder = setup
    out = folder / "run"
    common = [clip.path, "--encoder", encoder, "--network", network, "--outdir", out, "--steps", 1,
              "--size", 64, "--direction", f"age={direction}"]
    summary = _run([*common, "--edit", "age=+4"])

    # Every output has the input's frame count and rate; the full-frame ones its size, duration and audio.
    source = probe(clip.path)
    for name in ("output", "side_by_side", "input_crops", "recon", "edited"):
        path = out / f"{name}.mp4"
        info = probe(path)
        assert count_frames(path) == FRAMES and info.fps == source.fps, name
    output = probe(out / "output.mp4")
    assert (output.width, output.height) == (source.width, source.height)
    assert abs(output.duration - source.duration) <= 1.5 / float(source.fps)
    assert audio_streams(out / "output.mp4") == ["aac"] and summary["audio"] == "copied"
    assert (probe(out / "side_by_side.mp4").width, probe(out / "input_crops.mp4").width) == (320, 64)

    # Latents: raw and smoothed per frame; smoothing lowers their frame-to-frame jitter.
    latents = np.load(out / "latents.npy")
    assert latents.shape == (2, FRAMES, 16, 512)
    assert jitter(latents[1].reshape(FRAMES, -1)) < 0.5 * jitter(latents[0].reshape(FRAMES, -1))

    # Pixels far outside the face are unchanged (up to the codec); the face itself was replaced.
    alignment = json.loads((out / "alignment.json").read_text())
    original = list(decode_frames(clip.path))
    pasted = list(decode_frames(out / "output.mp4"))
    # The codec's own error: the untouched input re-encoded with the same settings.
    with VideoWriter(folder / "reencoded.mp4", 160, 160, source.fps, crf=18) as writer:
        for frame in original:
            writer.write(frame)
    reencoded = list(decode_frames(folder / "reencoded.mp4"))
    yy, xx = np.mgrid[:160, :160]
    far_diffs, face_diffs = [], []
    for t, record in enumerate(alignment["frames"]):
        quad = np.asarray(record["crop_quad"])
        centre, half = quad.mean(axis=0), np.ptp(quad[:, 0]) / 2
        dist = np.maximum(np.abs(xx - centre[0]), np.abs(yy - centre[1]))
        diff = np.abs(pasted[t].astype(int) - original[t]).mean(axis=2)
        codec = np.abs(reencoded[t].astype(int) - original[t]).mean(axis=2)
        far = dist > 1.05 * half
        far_diffs.append(diff[far].mean() - codec[far].mean())
        face_diffs.append(diff[dist < 0.15 * half].mean())
    assert max(far_diffs) < 0.5
    assert min(face_diffs) > 10.0
    stages = summary["stages"]
    assert not any(stage["cached"] for stage in stages.values())
    assert summary["frames"] == FRAMES and summary["frames_without_face"] == []
    assert summary["quad_jitter"]["raw"] > summary["quad_jitter"]["smoothed"]

    # An inversion interrupted after its first batch resumes from there (same latents as an uninterrupted run).
    invert_entry = out / "cache" / "invert" / summary["cache"]["invert"]
    record = invert_entry / "stage.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "complete": False}))
    (invert_entry / "chunks" / "000004-000005.npy").unlink()
    # Another edit, now with joint PTI and stitching: tracking, alignment and inversion come from the cache.
    again = _run([*common, "--edit", "age=-4", "--edit-ramp", "0.3", "--tune", 2, "--tune-steps", 2,
                  "--stitch-tune", 1, "--outputs", "output,edited", "--set", "tune.random_lpips_backbone=true"])
    for name in ("track", "align"):
        assert again["stages"][name]["cached"], name
    assert not again["stages"]["invert"]["cached"] and again["stages"]["invert"]["resumed_frames"] == 4
    np.testing.assert_array_equal(np.load(out / "latents.npy")[0], latents[0])
    assert not again["stages"]["tune"]["cached"] and again["stages"]["render"]["stitch_tuned"]
    assert (out / "tuned_generator.safetensors").is_file() and again["outputs"]["tuned_generator"]
    assert count_frames(out / "output.mp4") == FRAMES and audio_streams(out / "output.mp4") == ["aac"]
    assert again["edits"][0]["strength"] == -4.0 and again["tuned"]


@pytest.mark.slow
def test_inversion_resumes_after_the_batch_size_changes(setup, monkeypatch):
    """Bug 5: an inversion interrupted with one --batch-size resumes with another (chunks are kept by frame)."""
    from sgtool.models.encoders.inverter import ReStyleInverter

    clip, encoder, network, _, folder = setup
    common = [clip.path, "--encoder", encoder, "--network", network, "--steps", 1, "--size", 64, "--max-frames", 4,
              "--outputs", "recon"]
    real_invert = ReStyleInverter.invert
    passes = []

    def interrupted_on_second_pass(self, *args, **kwargs):
        passes.append(args[0].shape[0])
        if len(passes) == 2:
            raise KeyboardInterrupt
        return real_invert(self, *args, **kwargs)

    monkeypatch.setattr(ReStyleInverter, "invert", interrupted_on_second_pass)
    out = folder / "resume"
    stopped = CliRunner().invoke(app, ["video", *map(str, common), "--outdir", str(out), "--batch-size", "2",
                                       "--device", "cpu"])
    assert stopped.exit_code == 130, stopped.output
    monkeypatch.setattr(ReStyleInverter, "invert", real_invert)
    resumed = _run([*common, "--outdir", out, "--batch-size", 3])
    assert resumed["stages"]["invert"]["resumed_frames"] == 2 and not resumed["stages"]["invert"]["cached"]
    _run([*common, "--outdir", folder / "fresh", "--batch-size", 4])
    np.testing.assert_allclose(np.load(out / "latents.npy"), np.load(folder / "fresh" / "latents.npy"), atol=1e-5)
