"""`sgtool align` end to end: outputs, alignment.json, exit codes, --json, --skip-existing, --save-transforms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.data
from PIL import Image
from typer.testing import CliRunner

from sgtool.cli import app
from sgtool.geometry import make_transform
from sgtool.pipelines.align import load_alignment

runner = CliRunner()


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(skimage.data.astronaut()).save(folder / "astro.png")
    Image.fromarray(skimage.data.coffee()).save(folder / "coffee.jpg")  # no face
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    return folder


def run(*args):
    return runner.invoke(app, ["align", *map(str, args)])


def test_batch_continues_past_bad_inputs(photos, tmp_path):
    out = tmp_path / "out"
    result = run(photos, "--outdir", out, "--size", 64, "--json")
    assert result.exit_code == 1, result.stderr
    assert f"no face found in {photos / 'coffee.jpg'}" in result.stderr
    assert f"cannot read {photos / 'broken.jpg'}" in result.stderr
    summary = json.loads(result.stdout)
    assert summary == json.loads((out / "alignment.json").read_text())
    assert [f["source"] for f in summary["faces"]] == [str(photos / "astro.png")]
    assert sorted(f["source"] for f in summary["failures"]) == [str(photos / "broken.jpg"), str(photos / "coffee.jpg")]
    face = summary["faces"][0]
    assert face["face"] == 0 and face["aligned"] == str(out / "astro_face0_aligned.png")
    for key in ("eyes", "mouth"):
        assert np.asarray(face[key]).shape == (2, 2)
    assert np.asarray(face["quad"]).shape == np.asarray(face["crop_quad"]).shape == (4, 2)
    np.testing.assert_allclose(np.asarray(face["transform"]) @ np.asarray(face["inverse_transform"]), np.eye(3),
                               atol=1e-12)
    for name in ("astro_face0_aligned.png", "astro_face0_crop.png"):
        assert Image.open(out / name).size == (64, 64)
    assert sorted(p.name for p in out.iterdir()) == ["alignment.json", "astro_face0_aligned.png",
                                                     "astro_face0_crop.png"]
    assert summary["config"]["size"] == 64 and summary["config"]["recipe"] == "ffhq"


def test_all_good_exit_zero_and_save_transforms(tmp_path):
    Image.fromarray(skimage.data.astronaut()).save(tmp_path / "astro.png")
    out = tmp_path / "out"
    result = run(tmp_path / "astro.png", "-o", out, "--size", 64, "--save-transforms", out / "lt.npy",
                 "--recipe", "eyes")
    assert result.exit_code == 0, result.stderr
    assert "aligned 1 face(s)" in result.stderr
    record = load_alignment(out / "alignment.json")["faces"][0]
    assert isinstance(record["transform"], np.ndarray) and record["recipe"] == "eyes"
    # stylegan3-editing's layout: aligned file name -> (angle, translation, transform, inverse_transform).
    table = np.load(out / "lt.npy", allow_pickle=True).item()
    angle, translation, transform, inverse = table["astro_face0_aligned.png"]
    np.testing.assert_allclose(transform, make_transform(translation, angle), atol=1e-12)
    np.testing.assert_allclose(transform, record["transform"])
    np.testing.assert_allclose(inverse, np.linalg.inv(transform), atol=1e-12)


def test_skip_existing_resumes(tmp_path):
    Image.fromarray(skimage.data.astronaut()).save(tmp_path / "astro.png")
    out = tmp_path / "out"
    assert run(tmp_path / "astro.png", "-o", out, "--size", 64).exit_code == 0
    aligned = out / "astro_face0_aligned.png"
    before = aligned.stat().st_mtime_ns
    first = json.loads((out / "alignment.json").read_text())
    result = run(tmp_path / "astro.png", "-o", out, "--size", 64, "--skip-existing")
    assert result.exit_code == 0, result.stderr
    assert aligned.stat().st_mtime_ns == before
    assert json.loads((out / "alignment.json").read_text()) == first
    # Other settings do not reuse the old outputs.
    assert run(tmp_path / "astro.png", "-o", out, "--size", 32, "--skip-existing").exit_code == 0
    assert Image.open(aligned).size == (32, 32)


def test_same_stem_in_two_folders_does_not_collide(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        Image.fromarray(skimage.data.astronaut()).save(tmp_path / sub / "x.png")
    out = tmp_path / "out"
    result = run(str(tmp_path / "*" / "x.png"), "-o", out, "--size", 32, "--max-faces", 1)
    assert result.exit_code == 0, result.stderr
    assert (out / "x_face0_aligned.png").exists() and (out / "x_2_face0_aligned.png").exists()


@pytest.mark.parametrize("args, message", [
    (["missing.png"], "no such file"),
    (["--recipe", "dlib"], "--recipe must be one of"),
    (["--save-transforms", "t.txt"], "needs a .npy"),
    (["--max-faces", "0"], "--max-faces must be at least 1"),
    (["--size", "4"], "--size must be"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, args, message):
    Image.fromarray(skimage.data.astronaut()).save(tmp_path / "astro.png")
    target = [] if args[0] == "missing.png" else [tmp_path / "astro.png"]
    result = run(*target, *[tmp_path / a if a.endswith((".png", ".txt")) else a for a in args], "-o", tmp_path / "o")
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_empty_directory_is_a_usage_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run(tmp_path / "empty", "-o", tmp_path / "o")
    assert result.exit_code == 2 and "holds no image files" in result.stderr
