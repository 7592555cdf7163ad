"""`sgtool convert`: generators between NVIDIA pickle, rosinality .pt and sgtool safetensors, same renders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sgtool.cli import app
from sgtool.models import describe_generator, load_generator
from sgtool.pipelines.convert import convert_generator, render_check

from support.golden import golden_dir

runner = CliRunner()


def _render(G, ws):
    with torch.no_grad():
        return G.synthesis(ws, noise_mode="const")


def test_nvidia_pickle_to_rosinality_to_sgtool_renders_the_same(tmp_path, golden_generator_files):
    pkl, _, io, _ = golden_generator_files("sg2_64")
    result = runner.invoke(app, ["convert", str(pkl), str(tmp_path / "g.pt"), "--json"])
    assert result.exit_code == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["to"] == "rosinality" and report["source_layout"] == "nvidia-pkl"
    assert report["max_abs_diff"] == 0.0
    # sg2_64 has 16 channels everywhere and conv_clamp 256: rosinality's own class could not build it.
    assert any("channel widths" in n for n in report["notes"]) and any("clamp" in n for n in report["notes"])
    record = json.loads((tmp_path / "g.pt.json").read_text())
    assert record == report and record["input"] == str(pkl)
    assert record["settings"] == {"to": None, "verify": True, "device": "auto", "kernels": "auto"}

    raw = torch.load(tmp_path / "g.pt", map_location="cpu", weights_only=True)  # plain tensors, loadable anywhere
    assert set(raw) == {"g_ema", "latent_avg"} and "convs.0.conv.blur.kernel" in raw["g_ema"]
    assert raw["g_ema"]["conv1.conv.weight"].shape == (1, 16, 16, 3, 3)

    result = runner.invoke(app, ["convert", str(tmp_path / "g.pt"), str(tmp_path / "g.safetensors"), "--json"])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["source_layout"] == "rosinality"
    final = load_generator(tmp_path / "g.safetensors")
    assert describe_generator(final)["layout"] == "sgtool"
    ws_psi1 = torch.from_numpy(io["ws_psi1"])
    torch.testing.assert_close(_render(final, ws_psi1), torch.from_numpy(io["img_psi1"]), atol=1e-4, rtol=1e-4)
    with torch.no_grad():  # truncation survives: w_avg travels as rosinality's latent_avg
        torch.testing.assert_close(final.mapping(torch.from_numpy(io["z"]), None, truncation_psi=0.7),
                                   torch.from_numpy(io["ws"]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_render(final, torch.from_numpy(io["ws"])), torch.from_numpy(io["img"]),
                               atol=1e-4, rtol=1e-4)


def test_rosinality_golden_to_pickle_and_back_is_lossless(tmp_path):
    folder = golden_dir("sg2", "rosinality_64")
    source = folder / "stylegan2_64.pt"
    report = convert_generator(source, tmp_path / "r.pkl", verify=False)
    assert (report.to, report.source_layout, report.notes) == ("nvidia-pkl", "rosinality", [])
    back = convert_generator(tmp_path / "r.pkl", tmp_path / "r.pt", verify=False)
    assert back.notes == []  # conv_clamp None and the 512/256 widths travel in the pickle
    original = torch.load(source, map_location="cpu", weights_only=True)
    again = torch.load(tmp_path / "r.pt", map_location="cpu", weights_only=True)
    assert set(again["g_ema"]) == set(original["g_ema"])
    assert all(torch.equal(again["g_ema"][k], v) for k, v in original["g_ema"].items())  # bit-exact round trip
    assert torch.equal(again["latent_avg"], original["latent_avg"])
    io = np.load(folder / "io.npz")
    torch.testing.assert_close(_render(load_generator(tmp_path / "r.pt"), torch.from_numpy(io["wplus"])),
                               torch.from_numpy(io["img_wplus"]), atol=1e-4, rtol=1e-4)


def test_mapping_learning_rate_other_than_rosinalitys_is_folded_into_the_weights(tmp_path):
    from sgtool.models import build_generator, save_generator

    torch.manual_seed(0)
    G = build_generator("stylegan2", dict(z_dim=32, w_dim=32, c_dim=0, img_resolution=16, img_channels=3,
                                          mapping_kwargs={"num_layers": 2, "lr_multiplier": 0.5},
                                          channel_base=256, channel_max=16, conv_clamp=None)).eval()
    save_generator(G, tmp_path / "g.safetensors")
    report = convert_generator(tmp_path / "g.safetensors", tmp_path / "g.pt")
    assert report.max_abs_diff < 1e-5
    reloaded = load_generator(tmp_path / "g.pt")
    assert reloaded.mapping.fc0.bias_gain == pytest.approx(0.01)
    z = torch.randn(3, 32)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.mapping(z, None), G.mapping(z, None), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("args,message", [
    (["tiny-stylegan3-t", "x.pt"], "cannot write x.pt: only StyleGAN2 generators have a rosinality layout"),
    (["tiny-stylegan2", "x.bin"], "cannot tell the layout from x.bin"),
    (["tiny-stylegan2", "x.pt", "--to", "onnx"], "setting to = 'onnx' (from the command line): Input should be "
                                                 "'nvidia-pkl', 'rosinality' or 'sgtool'"),
    (["missing.pkl", "x.pt"], "missing.pkl does not exist and is not a model registry name"),
])
def test_bad_requests_give_one_line_and_exit_2(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["convert", *args])
    assert result.exit_code == 2, result.stdout + result.stderr
    assert message in " ".join(result.stderr.split()) and "Traceback" not in result.stderr
    assert not (tmp_path / args[1]).exists()


def test_render_check_is_deterministic_per_seed():
    from sgtool.models import build_generator

    G = build_generator("stylegan2", dict(z_dim=8, w_dim=8, c_dim=0, img_resolution=8, img_channels=3,
                                          channel_base=64, channel_max=8)).eval()
    assert torch.equal(render_check(G), render_check(G)) and not torch.equal(render_check(G), render_check(G, 1))
