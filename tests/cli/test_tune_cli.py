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
from sgtool.pipelines.shared.transforms import TransformTable
from sgtool.pipelines.tune import match_targets
from sgtool.utils.io import save_image, to_uint8, write_json

runner = CliRunner()
FAST = ["--no-align", "--set", "lpips_random_backbone=true", "--lr", "0.002", "--lpips-threshold", "0", "--kernels", "ref",
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
    assert [f["input"].rsplit("/", 1)[-1] for f in report["failed"]] == ["frame0.png"]
    assert [item["name"] for item in report["items"] if item["status"] == "ok"] == ["frame1"]
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
    table = TransformTable.read(tmp_path / "alignment.json")
    assert np.allclose(table.find("photo_face0_crop.png"), inverse)
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
                                 "--method", "optimize", "--set", "invert.project_steps=3", "--json", *FAST])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["steps_done"] == 2 and summary["images"][0]["name"] == "frame0"
    assert "pti projection schedule" in result.stderr
    # The pivot is written beside the tuned generator: the latent to edit with it.
    assert summary["latents"] == [str(out / "frame0_latent.npy")]
    pivot = np.load(out / "frame0_latent.npy")
    assert pivot.shape == (16, 32) and np.allclose(pivot, pivot[0])  # a W projection: one w for every layer
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
        names += [item["name"] for item in json.loads(result.stdout)["items"] if item["status"] == "ok"]
    assert sorted(names) == sorted(name.removesuffix(".png") for name in latents)
    merged = runner.invoke(app, ["merge-manifests", str(out)])
    assert merged.exit_code == 0, merged.stderr
    assert len(json.loads((out / "tune.json").read_text())["items"]) == len(latents)
    joint = runner.invoke(app, ["tune", str(root / "frames"), "--network", str(network), "--latents",
                                str(root / "latents.npy"), "--joint", "--shard", "1/2", *FAST])
    assert joint.exit_code == 2 and "--shard splits a folder" in joint.stderr


# The folder lists x.jpg (name x) before x.png (name x_2); latents.npy keys as `sgtool invert` writes them (the
# unique names) or as stylegan3-editing does (the file names).
@pytest.mark.parametrize("png_key", ["x_2.png", "x.png"])
def test_images_sharing_a_stem_get_their_own_folders(frames, png_key):
    # Bug 6: x.png and x.jpg tuned image by image used to share (and overwrite) out/x/, and x.jpg took x.png's
    # latent.
    root, network, latents, _ = frames
    folder = root / "same_stem"
    folder.mkdir()
    Image.open(root / "frames" / "frame0.png").save(folder / "x.png")
    Image.open(root / "frames" / "frame1.png").convert("RGB").save(folder / "x.jpg", quality=95)
    np.save(root / "x_latents.npy", {"x.jpg": latents["frame1.png"], png_key: latents["frame0.png"]},
            allow_pickle=True)
    out = root / "out"
    result = runner.invoke(app, ["tune", str(folder), "--network", str(network), "--latents",
                                 str(root / "x_latents.npy"), "--outdir", str(out), "--steps", "1", "--json", *FAST])
    assert result.exit_code == 0, result.stderr
    items = json.loads(result.stdout)["items"]
    assert sorted(i["name"] for i in items) == ["x", "x_2"]
    # Each folder holds its own image's run: its after.png is its tuned generator's render of its own latent.
    for name, latent in (("x", latents["frame1.png"][-1]), ("x_2", latents["frame0.png"][-1])):
        G = load_generator(out / name / "tuned_generator.safetensors")
        with torch.no_grad():
            expected = to_uint8(G.synthesis(torch.from_numpy(latent)[None]))[0]
        assert np.array_equal(np.asarray(Image.open(out / name / f"{name}_after.png")), expected), name


def test_set_values_are_converted_and_bad_ones_refused(frames, monkeypatch):
    # Bug 2: --set values reach the tuner converted to their types (1e-4 is a string to YAML).
    from sgtool.pipelines.tune import pti

    root, network, latents, _ = frames
    seen = {}
    real = pti.PivotalTuner.__init__

    def spy(self, generator, targets, settings, **kwargs):
        real(self, generator, targets, settings, **kwargs)
        seen["lr"] = self.optimizer.param_groups[0]["lr"]

    monkeypatch.setattr(pti.PivotalTuner, "__init__", spy)
    image = root / "frames" / "frame0.png"
    no_lr = [arg for k, arg in enumerate(FAST) if "--lr" not in FAST[max(k - 1, 0):k + 1]]
    args = ["tune", str(image), "--network", str(network), "--latents", str(root / "latents.npy"), "--steps", "1",
            *no_lr]
    result = runner.invoke(app, [*args, "--outdir", str(root / "ok"), "--set", "lr=1e-4"])
    assert result.exit_code == 0, result.stderr
    assert seen["lr"] == 1e-4 and isinstance(seen["lr"], float)
    for bad in ("l2_weight=heavy", "batch_size=0", "invert.project_steps=-1", "locality=perhaps", "lpips_weight=nan"):
        out = root / f"bad_{bad.split('=')[0].replace('.', '_')}"
        result = runner.invoke(app, [*args, "--outdir", str(out), "--set", bad])
        assert result.exit_code == 2, (bad, result.output)
        line = result.stderr.strip()
        assert "\n" not in line and bad.split("=")[0] in line and "Traceback" not in line
        assert not out.exists()



def test_a_non_finite_loss_is_one_line_and_exit_2(frames, monkeypatch):
    import sgtool.losses

    real = sgtool.losses.load_lpips
    monkeypatch.setattr(sgtool.losses, "load_lpips",
                        lambda *a, **k: (lambda model: lambda x, y: model(x, y) * float("nan"))(real(*a, **k)))
    root, network, _, _ = frames
    out = root / "nan"
    result = runner.invoke(app, ["tune", str(root / "frames" / "frame0.png"), "--network", str(network), "--latents",
                                 str(root / "latents.npy"), "--outdir", str(out), "--steps", "3", *FAST])
    assert result.exit_code == 2, result.output
    assert "loss became nan at step 1" in result.stderr and "no step had completed" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (out / "tune.json").exists() and not (out / "tuned_generator.safetensors").exists()
