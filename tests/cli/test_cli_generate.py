"""`sgtool generate` and `sgtool info` end to end, plus the shared CLI conventions."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from sgtool.cli import app
from sgtool.geometry import input_transform
from sgtool.models import load_generator
from sgtool.pipelines.generate import seed_to_z
from sgtool.utils.io import to_uint8

runner = CliRunner()


def api_render(G, seed, **kwargs):
    with torch.no_grad():
        ws = G.mapping(seed_to_z(seed, G.z_dim), None, truncation_psi=kwargs.pop("psi", 1.0))
        return to_uint8(G.synthesis(ws, **kwargs))[0], ws[0].numpy()


@pytest.mark.parametrize("name", ["sg3t_64", "sg2_64"])
def test_generate_writes_api_renders_per_seed(name, golden_generator_files, tmp_path):
    pkl, meta, _, _ = golden_generator_files(name)
    result = runner.invoke(app, ["generate", "--network", str(pkl), "--seeds", "0-2,7", "--trunc", "0.7",
                                 "--outdir", str(tmp_path), "--save-latents", "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert [r["seed"] for r in summary["images"]] == [0, 1, 2, 7]
    G = load_generator(pkl)
    for seed in (0, 1, 2, 7):
        png = np.asarray(Image.open(tmp_path / f"seed{seed:04d}.png"))
        expected, ws = api_render(G, seed, psi=0.7)
        assert png.shape == (64, 64, 3)
        assert np.abs(png.astype(int) - expected.astype(int)).max() <= 1
        latents = np.load(tmp_path / f"seed{seed:04d}.npy")
        assert latents.shape == (meta["num_ws"], 32)
        np.testing.assert_allclose(latents, ws, atol=1e-6)
    recorded = json.loads((tmp_path / "generate.json").read_text())
    assert recorded["config"]["trunc"] == 0.7 and recorded["config"]["seeds"] == "0-2,7"
    assert (tmp_path / "grid.png").exists()


def test_seed_convention_is_nvidia_gen_images():
    z = seed_to_z(42, 512)
    np.testing.assert_array_equal(z.numpy(), np.random.RandomState(42).randn(1, 512).astype(np.float32))


def test_rotate_translate_matches_input_transform(golden_generator_files, tmp_path):
    pkl, _, _, _ = golden_generator_files("sg3r_64")
    result = runner.invoke(app, ["generate", "--network", str(pkl), "--seeds", "3", "--rotate", "15",
                                 "--translate", "0.1,-0.2", "--outdir", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    G = load_generator(pkl)
    expected, _ = api_render(G, 3, transform=torch.from_numpy(input_transform((0.1, -0.2), 15)).float())
    plain, _ = api_render(G, 3)
    png = np.asarray(Image.open(tmp_path / "seed0003.png"))
    assert np.abs(png.astype(int) - expected.astype(int)).max() <= 1
    assert not np.array_equal(png, plain)  # the random golden net renders low-contrast images


def test_stylegan2_refuses_rotation(golden_generator_files, tmp_path):
    pkl, _, _, _ = golden_generator_files("sg2_64")
    result = runner.invoke(app, ["generate", "--network", str(pkl), "--rotate", "5", "--outdir", str(tmp_path)])
    assert result.exit_code == 2
    assert "need a StyleGAN3 network" in result.stderr
    assert not list(tmp_path.glob("*.png"))


def test_config_file_and_set_override(tmp_path):
    cfg = tmp_path / "gen.yaml"
    cfg.write_text("seeds: '5'\ntrunc: 0.5\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["generate", "--config", str(cfg), "--set", "outdir=" + str(out),
                                 "--set", "network=tiny-stylegan2", "--json"])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["config"]["trunc"] == 0.5 and summary["network"] == "tiny-stylegan2"
    assert (out / "seed0005.png").exists()
    bad = runner.invoke(app, ["generate", "--set", "colour=red"])
    assert bad.exit_code == 2 and "unknown config key 'colour'" in bad.stderr


@pytest.mark.parametrize("args,message", [
    (["--seeds", "a-b"], "cannot read seed"),
    (["--noise-mode", "loud"], "--noise-mode must be"),
    (["--class", "3"], "unconditional"),
    (["--device", "tpu"], "unknown device"),
    (["--kernels", "magic"], "unknown kernel backend"),
])
def test_bad_options_exit_2(args, message, tmp_path):
    result = runner.invoke(app, ["generate", "--outdir", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_info_json(golden_generator_files):
    pkl, meta, _, _ = golden_generator_files("sg3r_64")
    result = runner.invoke(app, ["info", str(pkl), "--json"])
    assert result.exit_code == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["kind"] == "stylegan3" and facts["config"] == "stylegan3-r"
    assert (facts["resolution"], facts["z_dim"], facts["w_dim"], facts["c_dim"]) == (64, 32, 32, 0)
    assert facts["num_ws"] == meta["num_ws"] and facts["mapping_layers"] == 2
    assert facts["parameters"] == 29989  # the count NVIDIA's network reports (golden README)


def test_console_script_entry_point(tmp_path):
    exe = __import__("shutil").which("sgtool") or str(__import__("pathlib").Path(sys.executable).parent / "sgtool")
    done = subprocess.run([exe, "generate", "--seeds", "0", "--outdir", str(tmp_path), "--network",
                           "tiny-stylegan3-t"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "TEST model" in done.stderr
    assert (tmp_path / "seed0000.png").exists()


def test_outputs_get_ordinary_file_permissions(tmp_path):
    import os

    from sgtool.utils.io import save_npy

    path = save_npy(np.zeros(3), tmp_path / "x.npy")
    mask = os.umask(0)
    os.umask(mask)
    assert (path.stat().st_mode & 0o777) == 0o666 & ~mask
