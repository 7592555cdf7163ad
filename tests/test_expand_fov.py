"""expand-fov on the golden StyleGAN3 generators: exact centre, consistent margins, sign convention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgtool.errors import SgtoolError
from sgtool.geometry import input_transform
from sgtool.models import load_generator
from sgtool.pipelines.expand_fov import Margins, expand_fov, plan_tiles, translation_matrix


def psnr(a: torch.Tensor, b: torch.Tensor, peak_to_peak: float = 2.0) -> float:
    return float(10 * torch.log10(peak_to_peak ** 2 / (a - b).square().mean()))


@pytest.fixture(scope="module")
def sg3t():
    from conftest import golden_dir

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
    from conftest import golden_dir

    sg2 = load_generator(golden_dir("generators") / "sg2_64.pkl")
    with pytest.raises(SgtoolError, match="StyleGAN2 has no input transform"):
        expand_fov(sg2, torch.zeros(1, sg2.num_ws, sg2.w_dim), Margins(left=8))
