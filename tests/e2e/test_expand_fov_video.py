"""expand-fov on a clip: the video pipeline's cached stages feed a per-frame expanded render with audio."""

from __future__ import annotations

import json

import numpy as np
import torch
from support.clips import make_clip
from typer.testing import CliRunner

from support.golden import golden_dir, small_stylegan3_w512
from sgtool.cli import app
from sgtool.pipelines.video_io import audio_streams, count_frames, probe


def test_clip_is_expanded_frame_by_frame_reusing_the_video_cache(tmp_path):
    from sgtool.models import save_generator

    encoder = golden_dir("encoders") / "BackboneEncoder_ckpt.pt"
    clip = make_clip(tmp_path, frames=4, size=160, jitter_px=1.0)
    generator = small_stylegan3_w512(0)
    network = save_generator(generator, tmp_path / "g512.safetensors")
    out = tmp_path / "fov"
    args = ["expand-fov", str(clip.path), "--encoder", str(encoder), "--network", str(network), "--left", "16",
            "--right", "16", "--top", "8", "--outdir", str(out), "--device", "cpu", "--json",
            "--set", "overlap=0.5"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    record = json.loads(first.stdout)
    video = out / "fov.mp4"
    assert record["video"] == str(video) and record["size"] == [96, 72]
    assert count_frames(video) == count_frames(clip.path) == record["frames"]
    info = probe(video)
    assert (info.width, info.height) == (96, 72) and info.fps == probe(clip.path).fps
    assert audio_streams(video)
    assert not any(stage["cached"] for stage in record["stages"].values())

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    stages = json.loads(again.stdout)["stages"]
    assert all(stages[name]["cached"] for name in ("track", "align", "invert", "smooth"))


def test_photo_is_inverted_then_expanded(tmp_path):
    from PIL import Image
    from skimage import data

    from sgtool.models import save_generator

    encoder = golden_dir("encoders") / "BackboneEncoder_ckpt.pt"
    generator = small_stylegan3_w512(1)
    network = save_generator(generator, tmp_path / "g512.safetensors")
    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).resize((256, 256)).save(photo)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["expand-fov", str(photo), "--encoder", str(encoder), "--network", str(network),
                                      "--method", "encoder", "--all", "8", "--outdir", str(out), "--json",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)["images"][0]
    assert record["size"] == [80, 80] and record["unaligned"]  # align found the face: its crop is expanded
    latent = np.load(out / "inversion" / f"{record['name']}_latent.npy")
    assert latent.shape == (16, 512)
    assert np.asarray(Image.open(record["image"])).shape == (80, 80, 3)
