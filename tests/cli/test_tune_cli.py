"""`sgtool tune` end to end: stylegan3-editing's latents and transforms, joint and per-image runs, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from support.golden import golden_dir
from sgtool.cli import app
from sgtool.geometry import input_transform
from sgtool.models import load_generator
from sgtool.pipelines.tune import match_targets, read_transforms
from sgtool.utils.io import save_image, to_uint8, write_json

runner = CliRunner()
FAST = ["--set", "random_lpips_backbone=true", "--lr", "0.002", "--lpips-threshold", "0", "--kernels", "ref",
        "--device", "cpu"]


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def frames(tmp_path):
    """Two 'photos' (renders of another network) with stylegan3-editing-style latents and transforms."""
    folder = golden_dir("generators")
    network = folder / "sg3t_64.pkl"
    G = load_generator(network)
    images = torch.from_numpy(np.load(folder / "sg3r_64_io.npz")["img"]).float()
    (tmp_path / "frames").mkdir()
    latents, transforms = {}, {}
    for i in range(2):
        name = f"frame{i}.png"
        save_image(images[i], tmp_path / "frames" / name)
        z = torch.from_numpy(np.random.RandomState(i).randn(2, G.z_dim)).float()
        with torch.no_grad():
            steps = list(G.mapping(z, None, truncation_psi=0.7).numpy())  # per-step latents, last = final
        latents[name] = steps
        angle, shift = 8.0 * (i + 1), (0.05, -0.03)
        inverse = input_transform(shift, angle).astype(np.float32)
        transforms[name] = (angle, np.asarray(shift), np.linalg.inv(inverse), inverse)
    np.save(tmp_path / "latents.npy", latents, allow_pickle=True)
    np.save(tmp_path / "landmarks_transforms.npy", transforms, allow_pickle=True)
    return tmp_path, network, latents, transforms


def test_joint_tuning_on_unaligned_frames(frames):
    root, network, latents, transforms = frames
    out = root / "out"
    result = runner.invoke(app, ["tune", str(root / "frames"), "--network", str(network), "--latents",
                                 str(root / "latents.npy"), "--transforms", str(root / "landmarks_transforms.npy"),
                                 "--outdir", str(out), "--joint", "--steps", "4", "--batch-size", "2",
                                 "--export-pkl", "--json", *FAST])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "done" and summary["steps_done"] == 4
    assert [im["name"] for im in summary["images"]] == ["frame0", "frame1"]
    assert all(im["transform"] for im in summary["images"])
    assert summary["mean_after"]["mse"] < summary["mean_before"]["mse"]
    assert json.loads((out / "tune.json").read_text())["steps_done"] == 4

    # The reconstructions are the tuned generator's renders through each frame's transform.
    for G in (load_generator(out / "tuned_generator.safetensors"), load_generator(out / "tuned_generator.pkl")):
        for name in ("frame0", "frame1"):
            ws = torch.from_numpy(latents[f"{name}.png"][-1])[None]
            transform = torch.from_numpy(transforms[f"{name}.png"][-1])
            with torch.no_grad():
                expected = to_uint8(G.synthesis(ws, transform=transform))[0]
                untransformed = to_uint8(G.synthesis(ws))[0]
            png = np.asarray(Image.open(out / f"{name}_after.png"))
            assert np.array_equal(png, expected)
            assert not np.array_equal(png, untransformed)


def test_separate_runs_continue_past_an_image_without_latent(frames):
    root, network, latents, _ = frames
    np.save(root / "one.npy", {"frame1.png": latents["frame1.png"]}, allow_pickle=True)
    out = root / "out"
    result = runner.invoke(app, ["tune", str(root / "frames"), "--network", str(network), "--latents",
                                 str(root / "one.npy"), "--outdir", str(out), "--steps", "2", "--json", *FAST])
    assert result.exit_code == 1, result.stderr
    assert "frame0.png" in result.stderr and "no latent" in result.stderr
    report = json.loads((out / "tune.json").read_text())
    assert [f["source"].rsplit("/", 1)[-1] for f in report["failures"]] == ["frame0.png"]
    assert [run["images"][0]["name"] for run in report["runs"]] == ["frame1"]
    assert (out / "frame1" / "tuned_generator.safetensors").is_file()
    assert not (out / "frame0").exists()


def test_bad_inputs_stop_with_one_line(frames):
    root, network, _, _ = frames
    np.save(root / "frame0_latent.npy", np.zeros([3, 32], np.float32))
    result = runner.invoke(app, ["tune", str(root / "frames" / "frame0.png"), "--network", str(network),
                                 "--latents", str(root / "frame0_latent.npy"), "--outdir", str(root / "o"), *FAST])
    assert result.exit_code == 2
    assert "frame0_latent.npy" in result.stderr and "[16, 32]" in result.stderr
    assert "Traceback" not in result.stderr
    result = runner.invoke(app, ["tune", str(root / "nothing"), "--network", str(network), "--latents",
                                 str(root / "latents.npy"), *FAST])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    result = runner.invoke(app, ["tune", str(root / "frames"), "--latents", str(root / "latents.npy"), *FAST])
    assert result.exit_code == 2 and "--network" in result.stderr


def test_alignment_json_pairs_crops_with_aligned_latents(tmp_path):
    inverse = input_transform((0.1, 0.0), 12.0).astype(np.float32)
    write_json({"faces": [{"source": "photo.jpg", "face": 0, "aligned": str(tmp_path / "photo_face0_aligned.png"),
                           "crop": str(tmp_path / "photo_face0_crop.png"), "transform": np.linalg.inv(inverse),
                           "inverse_transform": inverse}], "failures": []}, tmp_path / "alignment.json")
    table = read_transforms(tmp_path / "alignment.json")
    assert np.allclose(table.transforms["photo_face0_crop.png"], inverse)
    crop = tmp_path / "photo_face0_crop.png"
    save_image(np.full((64, 64, 3), 128, np.uint8), crop)
    latent = np.ones([16, 32], np.float32)
    targets, failures = match_targets([crop], {"photo_face0_aligned": latent, "other": 2 * latent}, 64, table)
    assert not failures and len(targets) == 1
    assert torch.equal(targets[0].latent, torch.from_numpy(latent))
    assert torch.allclose(targets[0].transform, torch.from_numpy(inverse))


def test_without_latents_the_image_is_projected_first(frames):
    root, network, _, _ = frames
    image = root / "frames" / "frame0.png"
    out = root / "auto"
    result = runner.invoke(app, ["tune", str(image), "--network", str(network), "--outdir", str(out), "--steps", "2",
                                 "--method", "optimize", "--set", "project_steps=3", "--json", *FAST])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["steps_done"] == 2 and summary["images"][0]["name"] == "frame0"
    result = runner.invoke(app, ["tune", str(image), "--network", str(network), "--outdir", str(out),
                                 "--method", "encoder", *FAST])
    assert result.exit_code == 2 and "--encoder" in result.stderr


def test_shards_split_a_separate_run_and_merge(frames):
    root, network, latents, _ = frames
    out = root / "sharded"
    names = []
    for k in (1, 2):
        result = runner.invoke(app, ["tune", str(root / "frames"), "--network", str(network), "--latents",
                                     str(root / "latents.npy"), "--outdir", str(out), "--steps", "1",
                                     "--shard", f"{k}/2", "--json", *FAST])
        assert result.exit_code == 0, result.stderr
        names += [run["images"][0]["name"] for run in json.loads(result.stdout)["runs"]]
    assert sorted(names) == sorted(name.removesuffix(".png") for name in latents)
    merged = runner.invoke(app, ["merge-manifests", str(out)])
    assert merged.exit_code == 0, merged.stderr
    assert len(json.loads((out / "tune.json").read_text())["runs"]) == len(latents)
    joint = runner.invoke(app, ["tune", str(root / "frames"), "--network", str(network), "--latents",
                                str(root / "latents.npy"), "--joint", "--shard", "1/2", *FAST])
    assert joint.exit_code == 2 and "--shard splits a folder" in joint.stderr
