"""`sgtool invert` end to end: outputs, batches, skip-existing, metrics, errors, align, optimize/hybrid."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from support.golden import golden_dir
from sgtool.cli import app
from sgtool.latents import load_latents, load_npy
from sgtool.models import build_generator
from sgtool.models.encoders import ArcFaceIRSE, read_encoder_checkpoint
from sgtool.pipelines.invert import encoder_input, load_encoder, render
from sgtool.utils.io import to_uint8

runner = CliRunner()
TEST_ONLY = ["--set", "lpips_random_backbone=true", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """The golden ReStyle-pSp encoder over a 64 px StyleGAN3 decoder (w_dim 512), saved as the trainer does."""
    golden = read_encoder_checkpoint(golden_dir("encoders") / "BackboneEncoder_ckpt.pt")
    torch.manual_seed(3)
    G = build_generator("stylegan3", dict(z_dim=32, c_dim=0, w_dim=512, img_resolution=64, img_channels=3,
                                          channel_base=512, channel_max=16, mapping_kwargs={"num_layers": 2}))
    with torch.no_grad():
        G.mapping.w_avg.normal_(0, 0.5)
    state = {k: v for k, v in golden.state_dict.items() if k.startswith("encoder.")}
    state.update({f"decoder.{k}": v for k, v in G.state_dict().items()})
    opts = dict(golden.opts, output_size=64, n_iters_per_batch=2, exp_dir=pathlib.PosixPath("exp"))
    path = tmp_path_factory.mktemp("enc") / "tiny_restyle.pt"
    torch.save({"state_dict": state, "opts": opts, "latent_avg": G.mapping.w_avg.clone()}, path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.RandomState(0)
    for name, size in (("a", (96, 80)), ("b", (64, 64))):
        small = rng.randint(0, 256, (8, 8, 3)).astype(np.uint8)
        Image.fromarray(small).resize(size, Image.BICUBIC).save(folder / f"{name}.png")
    (folder / "broken.png").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def id_model(tmp_path_factory):
    torch.manual_seed(5)
    net = ArcFaceIRSE()
    path = tmp_path_factory.mktemp("id") / "model_ir_se50.pth"
    torch.save(net.state_dict(), path)
    return path


def invoke(*args):
    return runner.invoke(app, ["invert", *map(str, args), *TEST_ONLY])


def test_encoder_batch_writes_every_output_and_reports_the_bad_file(tiny_encoder, photos, id_model, tmp_path):
    out = tmp_path / "out"
    result = invoke(photos, "--encoder", tiny_encoder, "--outdir", out, "--no-align", "--save-steps", "--steps", 1,
                    "--metrics", "--id-model", id_model, "--batch-size", 2, "--json")
    assert result.exit_code == 1, result.stderr  # one bad file: the batch finishes, exit 1
    summary = json.loads(result.stdout)
    assert [f["name"] for f in summary["failed"]] == ["broken"]
    assert "broken.png" in summary["failed"][0]["error"]
    assert sorted(r["name"] for r in summary["items"] if r["status"] == "ok") == ["a", "b"]

    enc = load_encoder(tiny_encoder)
    assert enc.default_steps == 3  # stylegan3-editing's inference default (not the checkpoint's 2); --steps 1 wins
    all_latents = load_npy(out / "latents.npy")
    assert isinstance(all_latents, dict) and sorted(all_latents) == ["a.png", "b.png"]
    for name in ("a", "b"):
        latent = np.load(out / f"{name}_latent.npy")
        assert latent.shape == (16, 512) and latent.dtype == np.float32
        assert len(all_latents[f"{name}.png"]) == 1
        np.testing.assert_array_equal(all_latents[f"{name}.png"][-1], latent)
        recon = np.asarray(Image.open(out / f"{name}_recon.png"))
        assert recon.shape == (64, 64, 3)
        steps_png = np.asarray(Image.open(out / f"{name}_steps.png"))
        assert steps_png.shape == (256, 256 * 2, 3)  # one step, then the input
        assert not (out / f"{name}_recon_unaligned.png").exists()  # no transform known without align
    # The library API, given the batch the CLI ran (a and b; --batch-size changes float rounding), gives the same
    # latents and reconstructions bit for bit.
    x = torch.stack([encoder_input(np.asarray(Image.open(photos / f"{name}.png").convert("RGB"))) for name in "ab"])
    api = enc.invert(x, steps=1)[-1].latents
    for i, name in enumerate("ab"):
        np.testing.assert_array_equal(np.load(out / f"{name}_latent.npy"), api[i].numpy())
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"{name}_recon.png")),
                                      to_uint8(render(enc.generator, api[i:i + 1]))[0])
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("mse", "psnr", "lpips", "ms_ssim", "id_similarity", "seconds"):
        assert key in metrics["mean"] and key in metrics["images"]["a"]
    assert -1 <= metrics["images"]["a"]["id_similarity"] <= 1
    record = json.loads((out / "invert.json").read_text())
    assert record["settings"]["method"] == "encoder" and record["settings"]["encoder"] == str(tiny_encoder)
    assert load_latents(out / "latents.npy")["a.png"].shape == (16, 512)

    # --skip-existing: nothing is inverted again and latents.npy keeps the earlier entries.
    again = invoke(photos / "a.png", photos / "b.png", "--encoder", tiny_encoder, "--outdir", out, "--no-align",
                   "--skip-existing", "--json")
    assert again.exit_code == 0, again.stderr
    assert sorted(i["name"] for i in json.loads(again.stdout)["items"] if i["status"] == "skipped") == ["a", "b"]
    assert sorted(load_npy(out / "latents.npy")) == ["a.png", "b.png"]


def test_optimize_and_hybrid_record_loss_video_and_steps(tiny_encoder, photos, tmp_path):
    golden_g = golden_dir("generators") / "sg3t_64.pkl"
    out = tmp_path / "opt"
    result = invoke(photos / "b.png", "--method", "optimize", "--network", golden_g, "--outdir", out, "--no-align",
                    "--num-steps", 4, "--space", "w", "--save-video", "--seed", 3, "--json")
    assert result.exit_code == 0, result.stderr
    rec = json.loads(result.stdout)["items"][0]
    latent = np.load(out / "b_latent.npy")
    assert latent.shape == (16, 32) and np.allclose(latent, latent[0])  # W space: one w for every style
    assert (out / "b_projection.mp4").stat().st_size > 0 and rec["video"].endswith("b_projection.mp4")
    # Same seed and settings -> the same latent.
    again = invoke(photos / "b.png", "--method", "optimize", "--network", golden_g, "--outdir", tmp_path / "opt2",
                   "--no-align", "--num-steps", 4, "--space", "w", "--seed", 3)
    assert again.exit_code == 0, again.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "opt2" / "b_latent.npy"), latent)

    out = tmp_path / "hyb"
    result = invoke(photos / "b.png", "--method", "hybrid", "--encoder", tiny_encoder, "--outdir", out, "--no-align",
                    "--steps", 1, "--num-steps", 3, "--save-steps", "--json")
    assert result.exit_code == 0, result.stderr
    steps = load_npy(out / "latents.npy")["b.png"]
    assert len(steps) == 2  # one encoder step, then the projection's result
    assert np.asarray(Image.open(out / "b_steps.png")).shape == (256, 256 * 3, 3)


@pytest.mark.parametrize("args, message", [
    (["--method", "encoder"], "needs --encoder"),
    (["--method", "optimize"], "needs --network"),
    (["--method", "sideways", "--network", "tiny-stylegan3-t"], "setting method = 'sideways'"),
    (["--encoder", "missing.pt"], "missing.pt does not exist"),
    (["--method", "optimize", "--network", "tiny-stylegan3-t", "--space", "z"], "setting space = 'z'"),
    (["--encoder", "ENC", "--id-model", "nowhere.pth", "--metrics"], "nowhere.pth does not exist"),
])
def test_bad_usage_is_one_line_and_exit_2(args, message, photos, tiny_encoder, tmp_path):
    args = [str(tiny_encoder) if a == "ENC" else a for a in args]
    result = invoke(photos / "a.png", "--outdir", tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "a_latent.npy").exists()


def test_align_path_renders_the_unaligned_reconstruction(tiny_encoder, tmp_path):
    skimage = pytest.importorskip("skimage")
    pytest.importorskip("sgtool.pipelines.align")
    photo = tmp_path / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(photo)
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.RandomState(1).randint(0, 256, (120, 120, 3)).astype(np.uint8)).save(noise)
    out = tmp_path / "out"
    result = invoke(photo, noise, "--encoder", tiny_encoder, "--outdir", out, "--steps", 1, "--json")
    assert result.exit_code == 1, result.stderr
    summary = json.loads(result.stdout)
    assert "no face found" in summary["failed"][0]["error"] and "--no-align" in summary["failed"][0]["error"]
    rec = next(i for i in summary["items"] if i["status"] == "ok")
    matrix = np.array(rec["inverse_transform"])
    assert matrix.shape == (3, 3) and not np.allclose(matrix, np.eye(3))  # the astronaut's head is tilted
    assert np.asarray(Image.open(out / "astronaut_recon_unaligned.png")).shape == (64, 64, 3)


def test_inputs_sharing_a_file_name_keep_apart_in_every_output(tiny_encoder, photos, tmp_path):
    # Bug 6: a/x.png and b/x.png shared one latents.npy key (and its latent) while other outputs were x and x_2.
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    Image.open(photos / "a.png").save(tmp_path / "a" / "x.png")
    Image.open(photos / "b.png").convert("RGB").resize((80, 80)).save(tmp_path / "b" / "x.png")
    out = tmp_path / "out"
    result = invoke(tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", "--encoder", tiny_encoder, "--outdir", out,
                    "--no-align", "--steps", 1, "--json")
    assert result.exit_code == 0, result.stderr
    names = [item["name"] for item in json.loads(result.stdout)["items"]]
    assert names == ["x", "x_2"]
    latents = load_npy(out / "latents.npy")
    assert sorted(latents) == ["x.png", "x_2.png"]
    for name in names:
        np.testing.assert_array_equal(latents[f"{name}.png"][-1], np.load(out / f"{name}_latent.npy"))
    assert not np.array_equal(np.load(out / "x_latent.npy"), np.load(out / "x_2_latent.npy"))
