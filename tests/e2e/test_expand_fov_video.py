"""expand-fov on a clip: the video pipeline's cached stages feed a per-frame expanded render with audio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support.clips import make_clip
from typer.testing import CliRunner

from support.golden import golden_dir, small_stylegan3_w512
from sgtool.cli import app
from sgtool.pipelines.shared.video_io import audio_streams, count_frames, probe


def test_clip_is_expanded_frame_by_frame_reusing_the_video_cache(tmp_path):
    from sgtool.models import save_generator

    encoder = golden_dir("encoders") / "BackboneEncoder_ckpt.pt"
    clip = make_clip(tmp_path, frames=4, size=160, jitter_px=1.0)
    generator = small_stylegan3_w512(0)
    network = save_generator(generator, tmp_path / "g512.safetensors")
    out = tmp_path / "fov"
    args = ["expand-fov", str(clip.path), "--encoder", str(encoder), "--network", str(network), "--left", "16",
            "--right", "16", "--top", "8", "--outdir", str(out), "--device", "cpu", "--json",
            "--set", "overlap=0.5", "--set", "video.encoder_steps=1"]
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

    _assert_reruns_from_cache(args)


def _assert_reruns_from_cache(args):
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    stages = json.loads(again.stdout)["stages"]
    assert all(stages[name]["cached"] for name in ("track", "align", "invert", "smooth"))


def _photo_and_network(tmp_path):
    from PIL import Image
    from skimage import data

    from sgtool.models import save_generator

    network = save_generator(small_stylegan3_w512(1), tmp_path / "g512.safetensors")
    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).resize((256, 256)).save(photo)
    return golden_dir("encoders") / "BackboneEncoder_ckpt.pt", network, photo


def test_photo_is_inverted_then_expanded(tmp_path):
    from PIL import Image

    encoder, network, photo = _photo_and_network(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["expand-fov", str(photo), "--encoder", str(encoder), "--network", str(network),
                                      "--method", "encoder", "--all", "8", "--outdir", str(out), "--json",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)["items"][0]["entries"][0]
    assert record["size"] == [80, 80] and record["unaligned"]  # align found the face: its crop is expanded
    latent = np.load(out / "inversion" / f"{record['name']}_latent.npy")
    assert latent.shape == (16, 512)
    assert np.asarray(Image.open(record["image"])).shape == (80, 80, 3)


def _files(folder) -> dict:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_expand_fov_after_a_video_run_never_overwrites_its_cache(tmp_path):
    """Bug 4: expand-fov into the folder of a `sgtool video` run with non-default clip settings reuses that
    run's stages (adopting its settings) and, with other settings, computes its own without touching them."""
    from sgtool.models import save_generator

    encoder = golden_dir("encoders") / "BackboneEncoder_ckpt.pt"
    clip = make_clip(tmp_path, frames=6, size=160, jitter_px=1.0)
    network = save_generator(small_stylegan3_w512(0), tmp_path / "g512.safetensors")
    out = tmp_path / "run"
    models = ["--encoder", str(encoder), "--network", str(network), "--outdir", str(out), "--device", "cpu", "--json"]
    video = ["video", str(clip.path), *models, "--start", "0.1", "--fps", "10", "--size", "48", "--smooth-window", "5",
             "--steps", "1", "--outputs", "output"]
    first = CliRunner().invoke(app, video)
    assert first.exit_code == 0, first.output
    before = _files(out)

    adopted = CliRunner().invoke(app, ["expand-fov", str(clip.path), *models, "--left", "8"])
    assert adopted.exit_code == 0, adopted.output
    assert "video.json" in adopted.stderr  # says that it took the clip settings of that run
    record = json.loads(adopted.stdout)
    assert all(record["stages"][name]["cached"] for name in ("track", "align", "invert", "smooth"))
    assert record["frames"] == json.loads(first.stdout)["frames"]

    other = CliRunner().invoke(app, ["expand-fov", str(clip.path), *models, "--left", "8", "--max-frames", "3"])
    assert other.exit_code == 0, other.output
    assert json.loads(other.stdout)["frames"] == 3
    after = _files(out)
    changed = [str(p.relative_to(out)) for p, value in before.items() if after.get(p) != value]
    assert changed == []
    _assert_reruns_from_cache(video)


def test_photos_and_latent_files_are_expanded_together(tmp_path):
    """Bug 3: photos (inverted first) and latent files in one call are all expanded and recorded."""
    from PIL import Image

    from sgtool.models import load_generator
    from sgtool.utils.io import to_uint8

    encoder, network, photo = _photo_and_network(tmp_path)
    ws = np.random.default_rng(0).standard_normal((16, 512)).astype(np.float32)
    np.save(tmp_path / "other_latent.npy", ws)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["expand-fov", str(photo), str(tmp_path / "other_latent.npy"), "--encoder",
                                      str(encoder), "--network", str(network), "--all", "8", "--outdir", str(out),
                                      "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [item["status"] for item in summary["items"]] == ["ok", "ok"] and summary["failed"] == []
    photo_item, latent_item = summary["items"]
    assert photo_item["input"] == str(photo) and photo_item["entries"][0]["unaligned"]
    assert latent_item["input"] == str(tmp_path / "other_latent.npy") and not latent_item["entries"][0]["unaligned"]
    assert all(Path(p).is_file() for item in summary["items"] for p in item["outputs"])
    canvas = np.asarray(Image.open(latent_item["entries"][0]["image"])).astype(int)
    assert canvas.shape == (80, 80, 3)
    generator = load_generator(network)
    with torch.no_grad():
        plain = generator.synthesis(torch.from_numpy(ws)[None], transform=torch.eye(3)[None])[0]
    assert np.abs(canvas[8:72, 8:72] - to_uint8(plain).astype(int)).max() <= 1
