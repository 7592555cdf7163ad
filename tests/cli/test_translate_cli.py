"""`sgtool translate` end to end on the golden pSp task checkpoints (../shared/golden/sg2/psp_tasks): outputs and
record, style mixing that draws pSp's z from --seed, batches and shards, and bad input as one line with exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from support.golden import golden_dir
from sgtool.cli import app

runner = CliRunner()
CPU = ["--device", "cpu"]


def _fixture(name: str):
    folder = golden_dir("sg2", "psp_tasks", f"psp_{name}_64")
    return folder / f"psp_{name}_64.pt", dict(np.load(folder / "io.npz"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The golden input files, a colour photo and a label map with a class the models do not know."""
    root = tmp_path_factory.mktemp("inputs")
    files = {}
    for name in ("seg", "superres"):
        _, io = _fixture(name)
        (root / name).mkdir()
        for i in range(2):
            files[f"{name}{i}"] = root / name / f"input_{i}.png"
            Image.fromarray(io[f"input_raw_{i}"]).save(files[f"{name}{i}"])
    rng = np.random.RandomState(0)
    files["photo"] = root / "photo.png"
    Image.fromarray(rng.randint(0, 256, (64, 64, 3)).astype(np.uint8)).save(files["photo"])
    files["class20"] = root / "class20.png"
    Image.fromarray(np.full((64, 64), 20, np.uint8)).save(files["class20"])
    return files


def _check(result, *needles: str):
    """Bad input: exit 2, one line on stderr naming the problem, no traceback."""
    text = result.stderr.strip()
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(text.splitlines()) == 1, text
    for needle in needles:
        assert needle in text, (needle, text)


def test_segmentation_with_style_mixing_writes_every_output_and_draws_psps_z(inputs, tmp_path):
    ckpt, io = _fixture("seg")
    out = tmp_path / "seg"
    result = runner.invoke(app, ["translate", str(inputs["seg0"]), "-e", str(ckpt), "-o", str(out), "--outputs", "3",
                                 "--seed", "606", "--mix-layers", "4-9", "--mix-alpha", "0.5", "--json", *CPU])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    item, = summary["items"]
    assert item["status"] == "ok" and summary["settings"]["task"] == "segmentation"
    assert summary["settings"]["mix_layers"] == [4, 5, 6, 7, 8, 9] and summary["settings"]["seed"] == 606
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["input_0_latent.npy", "input_0_translation.png", "input_0_mix_latents.npy", "input_0_mix1.png",
         "input_0_mix2.png", "input_0_mix3.png", "input_0_side_by_side.png", "translate.json"])
    latent = np.load(out / "input_0_latent.npy")
    assert latent.shape == (10, 512) and np.allclose(latent, io["codes"][0], atol=1e-4, rtol=1e-5)
    # --seed S draws the z of `np.random.seed(S)` in pSp's style_mixing.py: the same mixed codes as the reference.
    mixed = np.load(out / "input_0_mix_latents.npy")
    assert np.allclose(mixed, io["mix_codes_alpha05"][0], atol=1e-4, rtol=1e-5)
    translation = np.asarray(Image.open(out / "input_0_translation.png"))
    expected = np.clip(io["images"][0].transpose(1, 2, 0) * 127.5 + 128, 0, 255)
    assert translation.shape == (64, 64, 3) and np.abs(translation - expected).max() <= 1.01
    side = np.asarray(Image.open(out / "input_0_side_by_side.png"))
    assert side.shape == (256, 5 * 256, 3)  # input (as coloured labels) | translation | 3 mixes
    assert json.loads((out / "translate.json").read_text())["items"][0]["mixes"][0].endswith("input_0_mix1.png")


def test_super_resolution_needs_a_factor_and_degrades_as_trained(inputs, tmp_path):
    ckpt, io = _fixture("superres")
    _check(runner.invoke(app, ["translate", str(inputs["superres0"]), "-e", str(ckpt), "-o", str(tmp_path / "a"),
                               *CPU]), "1,2,4,8,16,32", "--factor")
    assert not (tmp_path / "a").exists()
    # A folder (both inputs, one encoder pass), resized outputs, as two shards.
    for shard in ("1/2", "2/2"):
        result = runner.invoke(app, ["translate", str(inputs["superres0"].parent), "-e", str(ckpt), "--factor", "8",
                                     "--resize-outputs", "--shard", shard, "-o", str(tmp_path / "sr"), *CPU])
        assert result.exit_code == 0, result.output
    for i in range(2):
        latent = np.load(tmp_path / "sr" / f"input_{i}_latent.npy")
        assert np.allclose(latent, io["codes"][i], atol=1e-4, rtol=1e-5)
        assert Image.open(tmp_path / "sr" / f"input_{i}_translation.png").size == (256, 256)
    assert len(list((tmp_path / "sr").glob("manifest-translate-shard*of2.json"))) == 2


def test_a_batch_goes_on_past_a_bad_input(inputs, tmp_path):
    ckpt, _ = _fixture("seg")
    result = runner.invoke(app, ["translate", str(inputs["seg1"]), str(inputs["class20"]), "-e", str(ckpt), "-o",
                                 str(tmp_path / "b"), "--json", *CPU])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["counts"]["ok"] == 1 and summary["counts"]["failed"] == 1
    assert "class id 20" in summary["failed"][0]["error"]
    assert (tmp_path / "b" / "input_1_translation.png").is_file()
    assert not list((tmp_path / "b").glob("class20*"))


@pytest.mark.parametrize("fixture, args, needles", [
    ("seg", ["{photo}"], ["photo.png is a colour image", "--palette"]),            # an RGB photo to a label model
    ("seg", ["{class20}"], ["class20.png holds class id 20", "19 classes"]),        # labels outside the classes
    ("sketch", ["{photo}"], ["photo.png is a colour image", "1-channel"]),          # wrong channel count
    ("sketch", ["{seg0}", "--factor", "8"], ["--factor is for super-resolution"]),
    ("sketch", ["{seg0}", "--outputs", "2", "--mix-layers", "4,12"], ["--mix-layers 12", "rows 0-9"]),
    ("frontalize", ["{seg0}", "--palette", "celebamask"], ["--palette is for segmentation"]),
    ("seg", ["{seg0}", "--mix-alpha", "0.5"], ["--outputs"]),
])
def test_bad_input_is_one_line_with_exit_2(inputs, tmp_path, fixture, args, needles):
    ckpt, _ = _fixture(fixture)
    args = [a.format(**{k: str(v) for k, v in inputs.items()}) for a in args]
    _check(runner.invoke(app, ["translate", *args, "-e", str(ckpt), "-o", str(tmp_path / "o"), *CPU]), *needles)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_photo_encoder_is_not_a_task_and_a_task_checkpoint_is_not_an_inverter(inputs, tmp_path):
    ckpt, _ = _fixture("sketch")
    _check(runner.invoke(app, ["invert", str(inputs["photo"]), "-e", str(ckpt), "-o", str(tmp_path / "i"), *CPU]),
           "sgtool translate")
