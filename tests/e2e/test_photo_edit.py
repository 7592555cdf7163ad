"""Photos in, photos out: every face edited and pasted back, untouched pixels kept, EXIF, caching of the
inversion and tuning across edits, sweeps of whole photos, and style mixing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from typer.testing import CliRunner

from sgtool.cli import app
from sgtool.demo import build_test_models
from sgtool.models import load_generator
from sgtool.pipelines.mix import mix_grid, mix_styles
from sgtool.pipelines.shared.images import read_image
from sgtool.pipelines.edit.paste import head_mask
from sgtool.settings import Mask
from sgtool.utils.io import to_uint8
from support.golden import golden_dir
from support.photos import two_astronauts

runner = CliRunner()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    built = build_test_models(folder)
    np.save(folder / "d.npy", np.random.RandomState(0).randn(1, 512).astype(np.float32) * 2)
    return built, folder / "d.npy"


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory):
    """Two copies of the astronaut portrait (a real photo), one smaller and tilted, on one wide canvas."""
    canvas = two_astronauts()
    path = tmp_path_factory.mktemp("photos") / "pair.png"
    Image.fromarray(canvas).save(path)
    return path, canvas


def edit(*args):
    return sgtool("edit", *args)


def sgtool(command, *args):
    return runner.invoke(app, [command, *map(str, args), "--device", "cpu"])


def model_args(models):
    built, direction = models
    return ["-e", built.encoder, "-n", built.network, "--direction", f"d={direction}"]


def mask_of(outdir, name, shape, k):
    landmarks = np.load(outdir / "faces" / name / f"face{k}" / "landmarks.npy").astype(np.float64)
    mask, (y0, y1, x0, x1) = head_mask(landmarks, shape, Mask())
    full = np.zeros(shape[:2], np.float32)
    full[y0:y1, x0:x1] = mask
    return full


def test_every_face_edited_into_the_photo_and_the_rest_untouched(models, two_faces, tmp_path):
    path, canvas = two_faces
    out = tmp_path / "out"
    result = edit(path, *model_args(models), "--edit", "d=+3", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    item = json.loads(result.stdout)["items"][0]
    assert len(item["faces"]) == 2 and item["size"] == [900, 420]
    edited = np.asarray(Image.open(out / "pair_d+3.png"))
    assert edited.shape == canvas.shape
    masks = [mask_of(out, "pair", canvas.shape, k) for k in range(2)]
    outside = (masks[0] == 0) & (masks[1] == 0)
    assert np.array_equal(edited[outside], canvas[outside])  # outside the masks: the input's pixels
    for k in range(2):
        face = np.load(out / "faces" / "pair" / f"face{k}" / "landmarks.npy").mean(axis=0).astype(int)
        patch = (slice(face[1] - 10, face[1] + 10), slice(face[0] - 10, face[0] + 10))
        assert np.abs(edited[patch].astype(int) - canvas[patch].astype(int)).mean() > 10, k
    side = np.asarray(Image.open(out / "pair_d+3_side_by_side.png"))
    assert side.shape == (420, 1800, 3)
    assert (out / "pair_face1_before.png").is_file() and (out / "pair_face1_d+3.png").is_file()
    assert item["stages"]["invert"]["cached"] is False

    # Another edit of the folder: the photo, models and faces come from its record; nothing is inverted again.
    again = edit(out, "--edit", "d=-2", "--face", 1, "--json")  # the recorded --direction d=FILE still names d
    assert again.exit_code == 0, again.output
    item = json.loads(again.stdout)["items"][0]
    assert item["stages"]["align"]["cached"] and item["stages"]["invert"]["cached"]
    assert [face["face"] for face in item["faces"]] == [1]
    only_second = np.asarray(Image.open(out / "pair_d-2.png"))
    first_alone = (masks[0] > 0) & (masks[1] == 0)
    assert first_alone.any() and np.array_equal(only_second[first_alone], canvas[first_alone])

    # A damaged cache is one line naming the file, and the folder's outputs stay as they were.
    face_dir = out / "faces" / "pair" / "face1"
    latent = np.load(face_dir / "latent.npy")
    np.save(face_dir / "latent.npy", np.full_like(latent, np.nan))
    before = (out / "pair_d-2.png").read_bytes()
    damaged = edit(out, "--edit", "d=-1", "--face", 1)
    assert damaged.exit_code == 2 and "latent.npy" in damaged.stderr and "NaN" in damaged.stderr, damaged.output
    assert len(damaged.stderr.strip().splitlines()) == 1 and not (out / "pair_d-1.png").exists()
    np.save(face_dir / "latent.npy", latent)
    record = json.loads((out / "faces" / "pair" / "alignment.json").read_text())
    record["faces"][1]["quad"][0][0] = float("nan")
    (out / "faces" / "pair" / "alignment.json").write_text(json.dumps(record))
    crafted = edit(out, "--edit", "d=-1", "--face", 1)
    assert crafted.exit_code == 2 and "quad holds NaN" in crafted.stderr, crafted.output
    assert (out / "pair_d-2.png").read_bytes() == before and not (out / "pair_d-1.png").exists()


def test_an_exif_rotated_jpeg_comes_back_upright_and_a_sweep_of_whole_photos(models, tmp_path):
    upright = skimage.data.astronaut()[:, 40:440]  # 512 x 400: orientation shows in the shape
    stored = Image.fromarray(np.rot90(upright, k=1).copy())  # EXIF 6: turn 90 degrees clockwise to display
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "turned.jpg", exif=exif, quality=95)
    out = tmp_path / "out"
    result = edit(tmp_path / "turned.jpg", *model_args(models), "--edit", "d=+2", "-o", out)
    assert result.exit_code == 0, result.output
    result = edit(tmp_path / "turned.jpg", *model_args(models), "--sweep", "d=-2:2:3", "--animate", "-o", out)
    assert result.exit_code == 0, result.output
    photo = np.asarray(Image.open(out / "turned_d+2.jpg"))
    assert photo.shape == upright.shape
    source = read_image(tmp_path / "turned.jpg")  # decoded upright
    assert np.abs(photo.astype(int) - source.astype(int))[-150:].mean() < 2  # away from the face: re-encoded only
    grid = np.asarray(Image.open(out / "turned_sweep_d.png"))
    assert grid.shape[1] == 3 * 400 and grid.shape[0] > 512
    assert (out / "turned_sweep_d.mp4").stat().st_size > 0


def test_tuning_per_face_is_kept_for_the_next_edit(models, tmp_path):
    photo = tmp_path / "astro.png"
    Image.fromarray(skimage.data.astronaut()).save(photo)
    out = tmp_path / "out"
    args = [photo, *model_args(models), "--tune", 2, "--set", "pti.lpips_random_backbone=true", "-o", out, "--json"]
    first = edit(*args, "--edit", "d=+1")
    assert first.exit_code == 0, first.output
    stages = json.loads(first.stdout)["items"][0]["stages"]
    assert stages["tune"] == {"cached": False, "steps": 2}
    tuned = list((out / "faces" / "astro" / "face0").glob("tune_*/tuned_generator.safetensors"))
    assert len(tuned) == 1
    second = edit(*args, "--edit", "d=-1")
    assert second.exit_code == 0, second.output
    stages = json.loads(second.stdout)["items"][0]["stages"]
    assert stages["tune"]["cached"] and stages["invert"]["cached"] and stages["align"]["cached"]


def test_photos_and_latents_are_not_mixed_and_a_missing_face_is_named(models, two_faces, tmp_path):
    path, _ = two_faces
    np.save(tmp_path / "a_latent.npy", np.zeros((16, 512), np.float32))
    result = edit(path, tmp_path / "a_latent.npy", *model_args(models), "--edit", "d=1", "-o", tmp_path / "o")
    assert result.exit_code == 2 and "not both" in result.output
    result = edit(path, *model_args(models), "--edit", "d=1", "--face", 5, "-o", tmp_path / "o")
    assert result.exit_code == 2 and "--face 5" in result.output and "2 face(s)" in result.output
    result = edit(path, "-n", models[0].network, "--direction", f"d={models[1]}", "--edit", "d=1", "-o", tmp_path / "p")
    assert result.exit_code == 2 and "pass --encoder" in result.output and not (tmp_path / "p").exists()


@pytest.mark.parametrize("name", ["sg3t_64", "sg2_64"])
def test_style_mixing_takes_exactly_the_listed_style_inputs(name, tmp_path):
    G = load_generator(golden_dir("generators", f"{name}.pkl"))
    ws = torch.from_numpy(np.load(golden_dir("generators", f"{name}_io.npz"))["ws"][:2])
    a, b = ws[0], ws[1]
    assert torch.equal(mix_styles(a, b, []), a) and torch.equal(mix_styles(a, b, range(G.num_ws)), b)
    size = G.img_resolution
    for layers, expected in (([], a), (list(range(G.num_ws)), b)):
        grid, _ = mix_grid(G, [("a", a)], [("b", b)], layers)
        with torch.no_grad():
            plain = to_uint8(G.synthesis(expected[None], noise_mode="const"))[0]
        assert np.array_equal(grid[size:, size:], plain)
    np.save(tmp_path / "a_latent.npy", a.numpy())
    np.save(tmp_path / "b_latent.npy", b.numpy())
    result = sgtool("mix", tmp_path / "a_latent.npy", tmp_path / "b_latent.npy", "-n",
                    golden_dir("generators", f"{name}.pkl"), "--layers", "2-4", "-o", tmp_path / "mix", "--json")
    assert result.exit_code == 0, result.output
    mixed = np.load(tmp_path / "mix" / "a_mix_b.npy")
    expected = a.numpy().copy()
    expected[2:5] = b.numpy()[2:5]
    assert np.array_equal(mixed, expected)
    result = sgtool("mix", "--rows", "0-2", "--cols", "7-8", "-n", golden_dir("generators", f"{name}.pkl"),
                    "--layers", "0-3", "-o", tmp_path / "seeds", "--json")
    assert result.exit_code == 0, result.output
    assert np.asarray(Image.open(tmp_path / "seeds" / "mix_grid.png")).shape[:2] == (4 * size, 3 * size)
    result = sgtool("mix", tmp_path / "a_latent.npy", tmp_path / "b_latent.npy", "-n",
                    golden_dir("generators", f"{name}.pkl"), "-o", tmp_path / "x")
    assert result.exit_code == 2 and "give --layers" in result.output
