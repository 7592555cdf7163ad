"""`sgtool align` end to end: outputs, alignment.json, exit codes, --json, --skip-existing, --save-transforms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image
from typer.testing import CliRunner

from sgtool.cli import app
from sgtool.geometry import make_transform
from sgtool.pipelines.align import run as A
from sgtool.pipelines.align import align_batch, load_alignment
from sgtool.settings import AlignSettings

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
    assert summary.pop("exit_code") == 1
    assert summary == json.loads((out / "alignment.json").read_text())
    assert [f["source"] for f in summary["faces"]] == [str(photos / "astro.png")]
    assert sorted(f["input"] for f in summary["failed"]) == [str(photos / "broken.jpg"), str(photos / "coffee.jpg")]
    items = {Path(i["input"]).name: i for i in summary["items"]}
    assert {name: i["status"] for name, i in items.items()} == {"astro.png": "ok", "broken.jpg": "failed",
                                                                "coffee.jpg": "failed"}
    assert items["astro.png"]["outputs"] == [str(out / "astro_face0_aligned.png"), str(out / "astro_face0_crop.png")]
    assert items["astro.png"]["faces_found"] == 1 and items["astro.png"]["error"] is None
    assert summary["counts"] == {"ok": 1, "skipped": 0, "failed": 2, "not_run": 0}
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
    assert summary["settings"]["outdir"] == str(out) and summary["settings"]["size"] == 64


def test_gif_and_ppm_are_images_like_every_other_suffix(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(skimage.data.astronaut()).save(folder / "astro.gif")
    Image.fromarray(skimage.data.astronaut()).save(folder / "astro2.ppm")
    result = run(folder, "-o", tmp_path / "out", "--size", 32, "--json")
    assert result.exit_code == 0, result.stderr
    assert [i["status"] for i in json.loads(result.stdout)["items"]] == ["ok", "ok"]


def test_a_lone_input_without_a_face_is_bad_input(tmp_path):
    Image.fromarray(skimage.data.coffee()).save(tmp_path / "coffee.png")
    result = run(tmp_path / "coffee.png", "-o", tmp_path / "out", "--size", 32)
    assert result.exit_code == 2 and "no face found in" in result.stderr and "--min-face-size" in result.stderr
    assert not (tmp_path / "out").exists()


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
    again = json.loads((out / "alignment.json").read_text())
    assert (again["faces"], again["config"]) == (first["faces"], first["config"])
    assert [i["status"] for i in again["items"]] == ["skipped"] and again["items"][0]["outputs"] == \
        first["items"][0]["outputs"]
    # Other settings do not reuse the old outputs.
    assert run(tmp_path / "astro.png", "-o", out, "--size", 32, "--skip-existing").exit_code == 0
    assert Image.open(aligned).size == (32, 32)


def test_killed_batch_keeps_its_progress_for_skip_existing(tmp_path, monkeypatch):
    for name in ("a", "b"):
        Image.fromarray(skimage.data.astronaut()).save(tmp_path / f"{name}.png")
    settings = AlignSettings(outdir=tmp_path / "out", size=32, skip_existing=True)
    real = A._align_item

    def killed_at_b(item, *args):
        if item.name == "b":
            raise KeyboardInterrupt
        return real(item, *args)

    monkeypatch.setattr(A, "PROGRESS_SAVE_SECONDS", -1.0)
    monkeypatch.setattr(A, "_align_item", killed_at_b)
    with pytest.raises(KeyboardInterrupt):
        align_batch([tmp_path / "a.png", tmp_path / "b.png"], settings)
    assert [Path(f["source"]).name for f in load_alignment(tmp_path / "out" / "alignment.json")["faces"]] == ["a.png"]
    monkeypatch.setattr(A, "_align_item", real)
    summary = align_batch([tmp_path / "a.png", tmp_path / "b.png"], settings)
    assert [i["status"] for i in summary["items"]] == ["skipped", "ok"] and summary["exit_code"] == 0
    assert [Path(f["source"]).name for f in summary["faces"]] == ["a.png", "b.png"]


def test_alignment_json_of_earlier_versions_still_loads(tmp_path):
    face = {"source": "a.jpg", "aligned": "a_face0_aligned.png", "transform": np.eye(3).tolist(),
            "inverse_transform": np.eye(3).tolist()}
    old = {"config": {"size": 64}, "faces": [face],
           "failures": [{"source": "b.jpg", "error": "no face found in b.jpg"}]}
    (tmp_path / "alignment.json").write_text(json.dumps(old))
    data = load_alignment(tmp_path / "alignment.json")
    assert isinstance(data["faces"][0]["inverse_transform"], np.ndarray)
    assert data["failed"] == [{"input": "b.jpg", "error": "no face found in b.jpg"}] and "failures" not in data


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
    (["--recipe", "dlib"], "setting recipe = 'dlib' (from the command line): Input should be 'ffhq' or 'eyes'"),
    (["--save-transforms", "t.txt"], "needs a .npy"),
    (["--max-faces", "0"], "setting max_faces = '0' (from the command line): Input should be greater than or "
                           "equal to 1"),
    (["--size", "4"], "setting size = '4'"),
    (["--shard", "3/2"], "--shard 3/2: K must be between 1 and N"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, args, message):
    Image.fromarray(skimage.data.astronaut()).save(tmp_path / "astro.png")
    target = [] if args[0] == "missing.png" else [tmp_path / "astro.png"]
    result = run(*target, *[tmp_path / a if a.endswith((".png", ".txt")) else a for a in args], "-o", tmp_path / "o")
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_outdir_that_is_a_file_is_refused_before_any_face_is_searched(tmp_path):
    Image.fromarray(skimage.data.astronaut()).save(tmp_path / "astro.png")
    (tmp_path / "o").write_text("not a folder")
    result = run(tmp_path / "astro.png", "-o", tmp_path / "o")
    assert result.exit_code == 2 and f"--outdir {tmp_path / 'o'} is a file" in result.stderr


def test_empty_directory_is_a_usage_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run(tmp_path / "empty", "-o", tmp_path / "o")
    assert result.exit_code == 2 and "holds no image files" in result.stderr


def test_runs_into_one_folder_add_up_and_other_settings_are_refused(tmp_path):
    for name in ("a", "b"):
        Image.fromarray(skimage.data.astronaut()).save(tmp_path / f"{name}.png")
    out = tmp_path / "out"
    assert run(tmp_path / "a.png", "-o", out, "--size", 32).exit_code == 0
    assert run(tmp_path / "b.png", "-o", out, "--size", 32).exit_code == 0
    record = json.loads((out / "alignment.json").read_text())
    assert sorted({Path(face["source"]).name for face in record["faces"]}) == ["a.png", "b.png"]
    before = (out / "alignment.json").read_text()
    result = run(tmp_path / "a.png", "-o", out, "--size", 64)
    assert result.exit_code == 2 and "other settings" in result.stderr and "--outdir" in result.stderr
    assert (out / "alignment.json").read_text() == before


def test_the_sample_portraits_mission_patch_is_rejected_with_its_reason(tmp_path):
    sample = Path(__file__).resolve().parents[2] / "samples" / "astronaut.jpg"
    result = run(sample, "--outdir", tmp_path, "--size", 64, "--json")
    assert result.exit_code == 0, result.stderr
    item = json.loads(result.stdout)["items"][0]
    assert item["faces_found"] == 1
    patch = [r for r in item["rejected"] if r["box"][1] > 300]  # the patch sits on the suit, below the face
    assert patch and "second detector pass" in patch[0]["reason"] and 0.5 < patch[0]["score"] < 0.7
