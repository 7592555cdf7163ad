"""StyleFeatureEditor against the reference outputs (../shared/golden/sfe): the released checkpoints loaded as
they are, codes, the 64 px feature tensors, the reconstruction and three edits (two strengths and a masked one),
within the tolerances the fixture's README suggests."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from support.golden import golden_dir
from sgtool.models import load_generator
from sgtool.models.encoders.sfe import feature_delta, load_feature_editor
from sgtool.models.encoders.sfe_layers import FeatureLayer, generator_feature, render_with_feature
from sgtool.pipelines.invert import load_encoder

FOLDER = golden_dir("sfe", "sfe_1024")
B64 = FeatureLayer("b64", 512, 64)  # SFE's F: rosinality's feature 9
CODES, FEATURE_C8, FEATURE_POOL8, DELTA, IMAGES = 1e-4, 5e-4, 2e-4, 1e-4, 2e-3


@pytest.fixture(scope="module")
def sfe():
    generator = load_generator(FOLDER / "stylegan2-ffhq-config-f.pt")
    latent_avg = torch.load(FOLDER / "stylegan2-ffhq-config-f.pt", map_location="cpu", weights_only=True)["latent_avg"]
    e4e = load_encoder(FOLDER / "e4e_ffhq_encode.pt", network=generator)
    model = load_feature_editor(FOLDER / "sfe_editor_light.pt")
    rgb = np.asarray(Image.open(FOLDER / "input.png").convert("RGB"), np.float32) / 255
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None] * 2 - 1
    x256 = F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False)
    direction = torch.load(FOLDER / "interfacegan_direction.pt", map_location="cpu", weights_only=True)
    return generator, latent_avg.float(), e4e, model, x256, direction, dict(np.load(FOLDER / "io.npz"))


def _feature(value, io, name):
    np.testing.assert_allclose(value[:, :8].numpy(), io[f"{name}_c8"], atol=FEATURE_C8, rtol=0)
    np.testing.assert_allclose(F.avg_pool2d(value.double(), 8).float().numpy(), io[f"{name}_pool8"],
                               atol=FEATURE_POOL8, rtol=0)


def _image(value, io, name):
    np.testing.assert_allclose(value[:, :, 448:576, 448:576].numpy(), io[f"{name}_center"], atol=IMAGES, rtol=0)
    np.testing.assert_allclose(value[:, :, :64, :64].numpy(), io[f"{name}_corner"], atol=IMAGES, rtol=0)
    np.testing.assert_allclose(F.avg_pool2d(value.double(), 8).float().numpy(), io[f"{name}_pool8"], atol=IMAGES,
                               rtol=0)


@torch.no_grad()
def test_inversion_codes_features_and_reconstruction_match_the_reference(sfe):
    generator, latent_avg, e4e, model, x256, _, io = sfe
    np.testing.assert_allclose(x256.numpy(), io["x256"], atol=1e-6, rtol=0)
    pooled, _ = model.backbone.pooled(x256)
    np.testing.assert_allclose(pooled.numpy(), io["fs_pooled"], atol=CODES * 10, rtol=0)
    inversion = model.invert(x256, generator, latent_avg)
    np.testing.assert_allclose(inversion.w.numpy(), io["w"], atol=CODES, rtol=0)
    _feature(inversion.content, io, "content")
    _feature(generator_feature(generator, inversion.w, B64), io, "wfeat")
    _feature(inversion.fused, io, "fused")
    feat_inv = model.edit_feature(inversion.fused)
    _feature(feat_inv, io, "feat_inv")
    _image(render_with_feature(generator, inversion.w, feat_inv, B64), io, "img_inv")
    w_e4e = e4e.encoder(x256) + latent_avg  # the generator file's latent_avg, as SFE takes it
    np.testing.assert_allclose(w_e4e.numpy(), io["w_e4e"], atol=CODES * 10, rtol=0)
    _feature(generator_feature(generator, w_e4e, B64), io, "e4e_feat")


@pytest.mark.parametrize("tag", ["p0", "p1", "m0"])
@torch.no_grad()
def test_edits_through_the_feature_editor_match_the_reference(sfe, tag):
    generator, latent_avg, e4e, model, x256, direction, io = sfe
    power = {"p0": io["powers"][0], "p1": io["powers"][1], "m0": io["powers"][0]}[tag]
    inversion = model.invert(x256, generator, latent_avg)
    w_e4e = e4e.encoder(x256) + latent_avg
    step = float(power) / 2 * direction  # InterFaceGAN as SFE applies it: half the strength, every style input
    w_edit, w_e4e_edit = inversion.w + step, w_e4e + step
    np.testing.assert_allclose(w_edit.numpy(), io[f"w_edit_{tag}"], atol=CODES, rtol=0)
    mask64 = None
    if tag == "m0":
        mask = np.asarray(Image.open(FOLDER / "mask.png").convert("RGB"), np.float32)[..., 0] / 255
        mask64 = F.interpolate(torch.from_numpy(mask)[None, None], size=(64, 64), mode="bilinear",
                               align_corners=False)
        np.testing.assert_allclose(mask64[0, 0].numpy(), io["mask64_m0"], atol=1e-6, rtol=0)
    delta = feature_delta(generator, B64, w_e4e, w_e4e_edit, mask64)
    np.testing.assert_allclose(delta[:, :8].numpy(), io[f"delta_{tag}_c8"], atol=DELTA, rtol=0)
    feat_edit = model.edit_feature(inversion.fused, delta)
    _feature(feat_edit, io, f"feat_edit_{tag}")
    _image(render_with_feature(generator, w_edit, feat_edit, B64), io, f"img_edit_{tag}")


def test_other_checkpoints_are_refused_as_sfe(tmp_path):
    from sgtool.errors import CheckpointError

    with pytest.raises(CheckpointError, match="not a StyleFeatureEditor editor checkpoint"):
        load_feature_editor(FOLDER / "e4e_ffhq_encode.pt")
    state = torch.load(FOLDER / "sfe_editor_light.pt", map_location="cpu", weights_only=True)["state_dict"]
    inverter_only = {k.replace("inverter.", "encoder.", 1): v for k, v in state.items() if k.startswith("inverter.")}
    torch.save({"state_dict": inverter_only}, tmp_path / "sfe_inverter_light.pt")
    with pytest.raises(CheckpointError, match="phase-1 file"):
        load_feature_editor(tmp_path / "sfe_inverter_light.pt")


def test_invert_writes_the_code_and_the_feature_tensor_it_renders_with(sfe, tmp_path):
    from safetensors import safe_open
    from typer.testing import CliRunner

    from sgtool.cli import app
    from sgtool.pipelines.shared.images import encoder_input, read_image

    generator, latent_avg, _, model, _, _, _ = sfe
    args = ["invert", str(FOLDER / "input.png"), "-e", str(FOLDER / "sfe_editor_light.pt"), "--w-encoder",
            str(FOLDER / "e4e_ffhq_encode.pt"), "--no-align", "-o", str(tmp_path / "inv"), "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "-n", str(FOLDER / "stylegan2-ffhq-config-f.pt")])
    assert result.exit_code == 0, result.output
    with torch.no_grad():
        inversion = model.invert(encoder_input(read_image(FOLDER / "input.png"))[None], generator, latent_avg)
        feature = model.edit_feature(inversion.fused)
    np.testing.assert_allclose(np.load(tmp_path / "inv" / "input_latent.npy"), inversion.w[0].numpy(), atol=1e-5)
    with safe_open(str(tmp_path / "inv" / "input_features.safetensors"), "pt") as f:
        meta = f.metadata()
        np.testing.assert_allclose(f.get_tensor("features").numpy(), feature[0].numpy(), atol=1e-4)
        np.testing.assert_allclose(f.get_tensor("fused").numpy(), inversion.fused[0].numpy(), atol=1e-4)
    assert meta["format"] == "sgtool-sfe-features" and meta["layer"] == "b64"
    assert meta["network"].endswith("stylegan2-ffhq-config-f.pt")
    # An SFE file holds no generator, and a projection cannot carry its feature tensor.
    no_network = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "x")])
    assert no_network.exit_code == 2 and "pass the generator it was trained with as --network" in no_network.stderr
    projected = CliRunner().invoke(app, [*args, "-n", str(FOLDER / "stylegan2-ffhq-config-f.pt"), "-m", "hybrid",
                                         "-o", str(tmp_path / "y")])
    assert projected.exit_code == 2 and "run it with --method encoder" in projected.stderr


def test_edit_carries_a_direction_through_the_feature_editor(sfe, tmp_path):
    from PIL import Image as PILImage
    from safetensors.torch import save_file
    from typer.testing import CliRunner

    from sgtool.cli import app
    from sgtool.models.encoders.sfe import read_features
    from sgtool.utils.io import to_uint8

    generator, _, _, model, _, direction, _ = sfe
    runner = CliRunner()
    inv = tmp_path / "inv"
    assert runner.invoke(app, ["invert", str(FOLDER / "input.png"), "-e", str(FOLDER / "sfe_editor_light.pt"),
                               "--w-encoder", str(FOLDER / "e4e_ffhq_encode.pt"), "-n",
                               str(FOLDER / "stylegan2-ffhq-config-f.pt"), "--no-align", "-o", str(inv),
                               "--device", "cpu"]).exit_code == 0
    torch.save(direction, tmp_path / "d.pt")
    common = ["-n", str(FOLDER / "stylegan2-ffhq-config-f.pt"), "--direction", f"d={tmp_path / 'd.pt'}",
              "--device", "cpu"]
    result = runner.invoke(app, ["edit", str(inv / "input_latent.npy"), *common, "--edit", "d=1.5",
                                 "-o", str(tmp_path / "edit"), "--json"])
    assert result.exit_code == 0, result.output
    entry = json.loads(result.stdout)["items"][0]["entries"][0]
    assert entry["feature_space"] is True
    saved = read_features(inv / "input_features.safetensors", generator)
    ws = torch.from_numpy(np.load(inv / "input_latent.npy"))[None]
    with torch.no_grad():
        e4e = saved.e4e_latent[None]
        delta = feature_delta(generator, B64, e4e, e4e + 1.5 * direction)
        image = render_with_feature(generator, ws + 1.5 * direction,
                                    model.edit_feature(saved.fused[None], delta), B64)
    written = np.asarray(PILImage.open(entry["image"]))
    assert np.abs(written.astype(int) - to_uint8(image)[0].astype(int)).max() <= 1
    # A StyleSpace edit goes through the editor too: the edited S and its F' are written.
    styled = runner.invoke(app, ["edit", str(inv / "input_latent.npy"), *common, "--style", "0:0=1",
                                 "-o", str(tmp_path / "s"), "--json"])
    assert styled.exit_code == 0, styled.output
    entry = json.loads(styled.stdout)["items"][0]["entries"][0]
    assert entry["feature_space"] is True and entry["styles"].endswith("_styles.npz") and entry["feature"]
    # Features of another generator or layer are one line.
    save_file({"features": torch.zeros(256, 64, 64), "fused": torch.zeros(256, 64, 64),
               "e4e_latent": torch.zeros(18, 512)}, str(inv / "input_features.safetensors"),
              metadata={"format": "sgtool-sfe-features", "layer": "b64"})
    other = runner.invoke(app, ["edit", str(inv / "input_latent.npy"), *common, "--edit", "d=1",
                                "-o", str(tmp_path / "o")])
    assert other.exit_code == 2 and "features of another generator or layer" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["tune", "expand-fov", "video"])
def test_commands_that_cannot_keep_the_feature_tensor_say_so(command, tmp_path):
    from typer.testing import CliRunner

    from sgtool.cli import app

    clip = FOLDER / "input.png"
    lpips = {"tune": ["--set", "lpips_random_backbone=true", "-m", "encoder", "--no-align"], "video": [],
             "expand-fov": ["--all", "16"]}[command]
    result = CliRunner().invoke(app, [command, str(clip), "-e", str(FOLDER / "sfe_editor_light.pt"), "-n",
                                      str(FOLDER / "stylegan2-ffhq-config-f.pt"), "-o", str(tmp_path / "o"),
                                      "--device", "cpu", *lpips])
    assert result.exit_code == 2, result.output
    assert "is a feature-space encoder (StyleFeatureEditor)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_one_registry_name_brings_the_generator_and_e4e_it_needs(monkeypatch):
    import sgtool.hub as hub
    from sgtool.hub.registry import ModelEntry

    files = {"sfe-test": FOLDER / "sfe_editor_light.pt", "g-test": FOLDER / "stylegan2-ffhq-config-f.pt",
             "e4e-test": FOLDER / "e4e_ffhq_encode.pt"}
    entry = ModelEntry("sfe-test", "encoder", "sfe.pt", ("https://example.invalid/sfe.pt",),
                       needs=(("network", "g-test"), ("w_encoder", "e4e-test")))
    monkeypatch.setattr(hub, "find_entry", lambda name, path=None: entry if name == "sfe-test" else None)
    monkeypatch.setattr(hub, "resolve_reference", lambda ref, kind=None: str(files.get(str(ref), ref)))
    inverter = load_encoder("sfe-test")
    assert inverter.family == "sfe" and inverter.generator.img_resolution == 1024
    assert inverter.w_encoder.encoder_type == "Encoder4Editing"
