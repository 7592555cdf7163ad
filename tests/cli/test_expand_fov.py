"""expand-fov on the golden StyleGAN3 generators: exact centre, consistent margins, sign convention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgtool.errors import SgtoolError
from sgtool.geometry import input_transform
from sgtool.models import load_generator
from sgtool.pipelines.fov import Margins, expand_fov, plan_tiles, translation_matrix


def psnr(a: torch.Tensor, b: torch.Tensor, peak_to_peak: float = 2.0) -> float:
    return float(10 * torch.log10(peak_to_peak ** 2 / (a - b).square().mean()))


@pytest.fixture(scope="module")
def sg3t():
    from support.golden import golden_dir

    folder = golden_dir("generators")
    G = load_generator(folder / "sg3t_64.pkl")
    ws = torch.from_numpy(np.load(folder / "sg3t_64_io.npz")["ws"][1:2])
    return G, ws


def test_canvas_size_and_exact_centre(sg3t):
    G, ws = sg3t
    margins = Margins(left=24, right=8, top=16, bottom=0)
    canvas, tiles = expand_fov(G, ws, margins)
    assert canvas.shape == (3, 64 + 16, 64 + 32)
    assert tiles[0].offset == (0, 0) and torch.equal(tiles[0].transform, torch.eye(3))
    with torch.no_grad():
        plain = G.synthesis(ws)[0]
    assert (canvas[:, 16:80, 24:88] - plain).abs().max() <= 1 / 255


@pytest.mark.parametrize("k", [8, 20, 32])
def test_translated_render_matches_canvas_window(sg3t, k):
    G, ws = sg3t
    margins = Margins(left=32, right=32, top=32, bottom=32)
    canvas, _ = expand_fov(G, ws, margins)
    with torch.no_grad():
        moved = G.synthesis(ws, transform=translation_matrix(-k, -k // 2, 64).float())[0]
    window = canvas[:, 32 - k // 2:96 - k // 2, 32 - k:96 - k]
    interior = (slice(None), slice(4, -4), slice(4, -4))
    assert psnr(moved[interior], window[interior]) >= 35


def test_expanding_left_adds_content_on_the_left(sg3t):
    G, ws = sg3t
    canvas, _ = expand_fov(G, ws, Margins(left=32))
    assert canvas.shape[-1] == 96
    with torch.no_grad():
        looks_left = G.synthesis(ws, transform=translation_matrix(-32, 0, 64).float())[0]
        looks_right = G.synthesis(ws, transform=translation_matrix(32, 0, 64).float())[0]
    margin = canvas[:, :, :32]
    assert psnr(margin, looks_left[:, :, :32]) >= 35
    assert psnr(margin, looks_left[:, :, :32]) > psnr(margin, looks_right[:, :, :32]) + 10


def test_unaligned_base_transform_composes_in_output_space(sg3t):
    G, ws = sg3t
    base = torch.from_numpy(input_transform((0.05, -0.1), 10)).float()
    canvas, tiles = expand_fov(G, ws, Margins(right=16), base_transform=base)
    with torch.no_grad():
        plain = G.synthesis(ws, transform=base)[0]
    assert (canvas[:, :, :64] - plain).abs().max() <= 1 / 255
    shifted = next(t for t in tiles if t.offset == (16, 0))
    expected = base.double() @ translation_matrix(16, 0, 64)
    assert torch.allclose(shifted.transform.double(), expected, atol=1e-7)


def test_tiles_cover_canvas_and_stay_inside():
    margins = Margins(left=50, right=10, top=0, bottom=33)
    tiles = plan_tiles(64, margins)
    covered = np.zeros((64 + 33, 64 + 60), bool)
    for t in tiles:
        x0, y0 = margins.left + t.offset[0], margins.top + t.offset[1]
        assert x0 >= 0 and y0 >= 0 and x0 + 64 <= covered.shape[1] and y0 + 64 <= covered.shape[0]
        covered[y0:y0 + 64, x0:x0 + 64] = True
    assert covered.all()


def test_refuses_more_than_twice_the_resolution_and_stylegan2(sg3t):
    G, ws = sg3t
    with pytest.raises(SgtoolError, match="more than 2x"):
        expand_fov(G, ws, Margins(left=40, right=40))
    from support.golden import golden_dir

    sg2 = load_generator(golden_dir("generators") / "sg2_64.pkl")
    with pytest.raises(SgtoolError, match="StyleGAN2 has no input transform"):
        expand_fov(sg2, torch.zeros(1, sg2.num_ws, sg2.w_dim), Margins(left=8))


def test_cli_expands_latent_with_edit_and_transform(tmp_path):
    import json

    from typer.testing import CliRunner

    from support.golden import golden_dir
    from sgtool.cli import app
    from sgtool.geometry import input_transform

    folder = golden_dir("generators")
    pkl = folder / "sg3t_64.pkl"
    G = load_generator(pkl)
    ws = np.load(folder / "sg3t_64_io.npz")["ws"][0]
    np.save(tmp_path / "face_latent.npy", ws)
    direction = np.random.RandomState(0).randn(1, 32).astype(np.float32)
    np.save(tmp_path / "dir.npy", direction)
    inv = input_transform((0.02, 0.0), 8.0)
    np.save(tmp_path / "transforms.npy", {"face": [8.0, [0.02, 0.0], np.linalg.inv(inv), inv]}, allow_pickle=True)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "expand-fov", str(tmp_path / "face_latent.npy"), "--network", str(pkl), "--left", "16", "--top", "8",
        "--edit", "tilt=+1.5", "--direction", f"tilt={tmp_path / 'dir.npy'}", "--transforms",
        str(tmp_path / "transforms.npy"), "--outdir", str(out), "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    item = json.loads(result.stdout)["items"][0]
    assert item["status"] == "ok" and item["name"] == "face"
    record = item["entries"][0]
    assert record["name"] == "face_tilt+1.5" and record["size"] == [80, 72] and record["unaligned"]
    from PIL import Image

    canvas = np.asarray(Image.open(record["image"])).astype(int)
    edited = torch.from_numpy(ws + 1.5 * direction)[None]
    with torch.no_grad():
        plain = G.synthesis(edited, transform=torch.from_numpy(inv).float())[0]
    from sgtool.utils.io import to_uint8

    assert np.abs(canvas[8:, 16:] - to_uint8(plain).astype(int)).max() <= 1
    tiles = np.load(record["tile_transforms"])
    assert tiles.shape == (len(record["tile_offsets"]), 3, 3)
    assert (out / "expand_fov.json").exists()

    too_big = CliRunner().invoke(app, ["expand-fov", str(tmp_path / "face_latent.npy"), "--network", str(pkl),
                                       "--all", "40", "--outdir", str(out)])
    assert too_big.exit_code == 2 and "more than 2x" in too_big.stderr
    sg2 = CliRunner().invoke(app, ["expand-fov", str(tmp_path / "face_latent.npy"), "--network",
                                   str(folder / "sg2_64.pkl"), "--left", "8", "--outdir", str(out)])
    assert sg2.exit_code == 2 and "StyleGAN2" in sg2.stderr


def test_cli_shards_split_latent_batches_and_merge(tmp_path):
    import json

    from typer.testing import CliRunner

    from support.golden import golden_dir
    from sgtool.cli import app

    pkl = golden_dir("generators") / "sg3t_64.pkl"
    ws = np.load(golden_dir("generators") / "sg3t_64_io.npz")["ws"]
    files = []
    for i in range(4):
        files.append(tmp_path / f"face{i}_latent.npy")
        np.save(files[-1], ws[i])
    out = tmp_path / "out"
    done = []
    for k in (1, 2):
        result = CliRunner().invoke(app, ["expand-fov", *map(str, files), "--network", str(pkl), "--left", "8",
                                          "--outdir", str(out), "--shard", f"{k}/2", "--json"])
        assert result.exit_code == 0, result.stderr
        done += [e["name"] for item in json.loads(result.stdout)["items"] for e in item["entries"]]
    assert sorted(done) == [f"face{i}" for i in range(4)]
    merged = CliRunner().invoke(app, ["merge-manifests", str(out), "--json"])
    assert merged.exit_code == 0, merged.stderr
    assert (out / "expand_fov.json").exists()
    assert len(json.loads((out / "expand_fov.json").read_text())["items"]) == 4
