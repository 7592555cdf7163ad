"""`sgtool edit --crossover A B --mask M`, `--region` (local edits) and `--scribble`, as Image2StyleGAN++."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from support.golden import golden_dir
from sgtool.cli import app
from sgtool.models import load_generator
from sgtool.pipelines.shared.render import render
from sgtool.utils.io import to_uint8

runner = CliRunner()
TEST_ONLY = ["--set", "invert.lpips_random_backbone=true", "--device", "cpu"]
SIZE = 64
INSIDE = slice(14, 51)  # a central 37 x 37 square: a third of the picture


def invoke(*args):
    return runner.invoke(app, ["edit", *map(str, args), *TEST_ONLY])


@pytest.fixture(scope="module")
def network():
    return golden_dir("generators") / "sg2_64.pkl"


@pytest.fixture(scope="module")
def generator(network):
    return load_generator(network)


def code(G, seed: int) -> torch.Tensor:
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).to(torch.float32)
    with torch.no_grad():
        return G.mapping(z, None)[0]


def square_mask(path) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[INSIDE, INSIDE] = 255
    Image.fromarray(mask).save(path)
    return mask == 255


def gradient_energy(image: np.ndarray, band: np.ndarray) -> float:
    x = image.astype(np.float64) / 127.5
    dx, dy = np.zeros_like(x), np.zeros_like(x)
    dx[:, :-1], dy[:-1] = x[:, 1:] - x[:, :-1], x[1:] - x[:-1]
    return float((dx ** 2 + dy ** 2).sum(axis=2)[band].mean())


def test_crossover_takes_a_inside_the_mask_and_b_outside_without_a_seam(generator, network, tmp_path):
    images = {}
    for name, seed in (("a", 1), ("b", 2)):
        images[name] = to_uint8(render(generator, code(generator, seed)[None]))[0]
        Image.fromarray(images[name]).save(tmp_path / f"{name}.png")
    inside = square_mask(tmp_path / "region.png")
    result = invoke("--crossover", tmp_path / "a.png", tmp_path / "b.png", "--mask", tmp_path / "region.png",
                    "-n", network, "-o", tmp_path / "cross", "--local-steps", 60, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    out = np.asarray(Image.open(tmp_path / "cross" / "a_x_b.png"))
    a, b = (images[k].astype(np.float64) for k in "ab")
    to_a, to_b = np.square(out - a).mean(axis=2), np.square(out - b).mean(axis=2)
    assert to_a[inside].mean() < to_b[inside].mean() and to_b[~inside].mean() < to_a[~inside].mean()
    assert record["inside_mse"] < record["outside_mse"] * 10 and (tmp_path / "cross" / "crossover.json").is_file()
    # The seam: a 4 px band around the square's edge.
    grown, shrunk = np.zeros_like(inside), np.zeros_like(inside)
    grown[10:55, 10:55], shrunk[18:47, 18:47] = True, True
    band = grown & ~shrunk
    seam = gradient_energy(out, band)
    inputs = (gradient_energy(images["a"], band) + gradient_energy(images["b"], band)) / 2
    print(f"crossover: seam-band gradient energy {seam:.3f} vs inputs' {inputs:.3f}; inside MSE to A "
          f"{to_a[inside].mean():.0f} vs B {to_b[inside].mean():.0f}")
    assert seam <= inputs
    # The crossover latent edits like any other.
    latent = np.load(tmp_path / "cross" / "a_x_b_latent.npy")
    assert latent.shape == (generator.num_ws, generator.w_dim)
    np.save(tmp_path / "direction.npy", np.ones(generator.w_dim, np.float32) / np.sqrt(generator.w_dim))
    edited = invoke(tmp_path / "cross" / "a_x_b_latent.npy", "-n", network, "--direction",
                    f"push={tmp_path / 'direction.npy'}", "--edit", "push=+1", "-o", tmp_path / "edit")
    assert edited.exit_code == 0, edited.output
    assert (tmp_path / "edit" / "a_x_b_push+1.png").is_file()


def test_local_edit_changes_the_region_and_keeps_the_rest(generator, network, tmp_path):
    w = code(generator, 1)
    np.save(tmp_path / "face_latent.npy", w.numpy())
    direction = np.random.RandomState(5).randn(generator.w_dim).astype(np.float32)
    np.save(tmp_path / "direction.npy", direction / np.linalg.norm(direction))
    inside = square_mask(tmp_path / "mouth.png")
    result = invoke(tmp_path / "face_latent.npy", "-n", network, "--direction", f"push={tmp_path / 'direction.npy'}",
                    "--edit", "push=+0.3", "--region", tmp_path / "mouth.png", "--local-steps", 60,
                    "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    latent = torch.from_numpy(np.load(tmp_path / "out" / "face_push+0.3.npy"))
    before, after = render(generator, w[None])[0], render(generator, latent[None])[0]
    change = (after - before).square().mean(dim=0).numpy()
    ratio = change[~inside].mean() / change[inside].mean()
    print(f"local edit: outside/inside change = {ratio:.3f}")
    assert ratio < 0.1
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "face_push+0.3.png")),
                                  to_uint8(after[None])[0])


def test_scribble_strokes_become_real_and_the_rest_is_kept(generator, network, tmp_path):
    w = code(generator, 3)
    np.save(tmp_path / "face_latent.npy", w.numpy())
    original = to_uint8(render(generator, w[None]))[0]
    painted = original.copy()
    painted[20:44, 28:36] = (250, 250, 250)  # a white stroke
    Image.fromarray(painted).save(tmp_path / "strokes.png")
    result = invoke(tmp_path / "face_latent.npy", "-n", network, "--scribble", tmp_path / "strokes.png",
                    "--local-steps", 40, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    out = np.asarray(Image.open(tmp_path / "out" / "face_scribble.png")).astype(np.float64)
    stroke = np.zeros((SIZE, SIZE), bool)
    stroke[20:44, 28:36] = True
    assert out[stroke].mean() > original[stroke].astype(np.float64).mean() + 20  # the stroke's area got lighter
    assert np.square(out - original)[~stroke].mean() < np.square(out - painted)[stroke].mean() * 4


@pytest.mark.parametrize("case, message", [
    ("black_mask", "black (almost) everywhere, and white marks where the first image shows"),
    ("not_an_image", "cannot read"),
    ("sizes_differ", "a crossover takes two images of one size"),
    ("one_input", "--crossover takes two inputs"),
    ("scribble_size", "paint on a copy of that image"),
    ("region_without_edit", "--region confines"),
    ("part_on_latent", "names a face part, found from a photo's landmarks"),
])
def test_bad_masked_edits_are_one_line_and_exit_2(case, message, generator, network, tmp_path):
    for name, seed in (("a", 1), ("b", 2)):
        Image.fromarray(to_uint8(render(generator, code(generator, seed)[None]))[0]).save(tmp_path / f"{name}.png")
    square_mask(tmp_path / "m.png")
    args = ["--crossover", tmp_path / "a.png", tmp_path / "b.png", "--mask", tmp_path / "m.png", "-n", network,
            "--local-steps", 1]
    if case == "black_mask":
        Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(tmp_path / "m.png")
    elif case == "not_an_image":
        (tmp_path / "m.png").write_text("no")
    elif case == "sizes_differ":
        Image.open(tmp_path / "b.png").resize((80, 80)).save(tmp_path / "b.png")
    elif case == "one_input":
        args.remove(tmp_path / "b.png")
    elif case == "part_on_latent":
        np.save(tmp_path / "x_latent.npy", code(generator, 1).numpy())
        np.save(tmp_path / "d.npy", np.ones(generator.w_dim, np.float32))
        args = [tmp_path / "x_latent.npy", "-n", network, "--direction", f"push={tmp_path / 'd.npy'}", "--edit",
                "push=1", "--region", "mouth"]
    else:
        np.save(tmp_path / "x_latent.npy", code(generator, 1).numpy())
        Image.new("RGB", (32, 32)).save(tmp_path / "strokes.png")
        args = [tmp_path / "x_latent.npy", "-n", network, "--local-steps", 1,
                *(["--scribble", tmp_path / "strokes.png"] if case == "scribble_size" else
                  ["--region", tmp_path / "m.png"])]
    result = invoke(*args, "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not any((tmp_path / "out").glob("*.npy")) if (tmp_path / "out").exists() else True
