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
    assert recorded == summary
    assert recorded["settings"]["trunc"] == 0.7 and recorded["settings"]["seeds"] == "0-2,7"
    assert recorded["count"] == 4 and recorded["test_model"] is False
    assert Image.open(tmp_path / "grid.png").size == (4 * 64, 64)


def test_grid_keeps_only_the_first_grid_max_images(tmp_path):
    result = runner.invoke(app, ["generate", "--network", "tiny-stylegan2", "--seeds", "0-4", "--outdir",
                                 str(tmp_path), "--set", "grid_max=2", "--json"])
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)["images"]) == 5 and len(list(tmp_path.glob("seed*.png"))) == 5
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    first = [np.asarray(Image.open(tmp_path / f"seed000{k}.png")) for k in (0, 1)]
    np.testing.assert_array_equal(grid, np.concatenate(first, axis=1))
    assert not runner.invoke(app, ["generate", "-n", "tiny-stylegan2", "--seeds", "0-1", "-o", str(tmp_path / "b"),
                                   "--set", "grid=false"]).exit_code
    assert not (tmp_path / "b" / "grid.png").exists()


def test_seed_ranges_are_never_expanded():
    import itertools

    from sgtool.models import build_builtin
    from sgtool.pipelines.generate import render_seeds
    from sgtool.utils.parsing import seed_ranges

    seeds = itertools.chain.from_iterable(seed_ranges("5-4294967295"))  # four billion seeds
    first = next(render_seeds(build_builtin("tiny-stylegan2"), seeds))
    assert first.seed == 5 and first.image.dtype == np.uint8


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
    assert summary["settings"]["trunc"] == 0.5 and summary["network"] == "tiny-stylegan2"
    assert (out / "seed0005.png").exists()
    bad = runner.invoke(app, ["generate", "--set", "colour=red"])
    assert bad.exit_code == 2 and "unknown setting 'colour' in --set colour=red" in bad.stderr


@pytest.mark.parametrize("args,message", [
    (["--seeds", "a-b"], "setting seeds = 'a-b' (from the command line): cannot read seed"),
    (["--seeds", "4294967296"], "seed 4294967296 is too large"),
    (["--noise-mode", "loud"], "setting noise_mode = 'loud' (from the command line): Input should be 'const'"),
    (["--class", "3", "-n", "tiny-stylegan3-t"], "unconditional"),
    ([], "give --network: a generator checkpoint, a registry name"),
    (["--device", "tpu"], "setting device = 'tpu' (from the command line): choose auto, cpu, cuda or cuda:N"),
    (["--kernels", "magic"], "setting kernels = 'magic'"),
    (["--translate", "0.1"], "setting translate"),
    (["--network", "no-such-net"], "no-such-net does not exist and is not a model registry name"),
])
def test_bad_options_exit_2(args, message, tmp_path):
    result = runner.invoke(app, ["generate", "--outdir", str(tmp_path / "out"), *args])
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split())
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


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


def test_a_huge_seed_range_runs_in_constant_memory(tmp_path, monkeypatch):
    """generate streams: images are written as they are rendered and the record keeps at most RECORD_LIMIT of
    them, so a billion seeds hold no more than a few (the run is stopped after 12 images here)."""
    from sgtool.pipelines import generate as pipeline
    from sgtool.progress import Reporter
    from sgtool.settings import GenerateSettings

    monkeypatch.setattr(pipeline, "RECORD_LIMIT", 3)
    seen = []

    class StopAfter(Reporter):
        def advance(self, count=1, info=""):
            seen.append(len(list(tmp_path.glob("seed*.png"))))
            if len(seen) == 12:
                raise KeyboardInterrupt

    settings = GenerateSettings(network="tiny-stylegan2", seeds="0-999999999", outdir=tmp_path, grid_max=2)
    with pytest.raises(KeyboardInterrupt):
        pipeline.generate_images(settings, reporter=StopAfter())
    assert seen == list(range(1, 13))  # each image was on disk before the next was rendered
    small = pipeline.generate_images(settings.model_copy(update={"seeds": "0-7"}))
    assert small["count"] == 8 and small["images_listed"] == 3 and len(small["images"]) == 3
