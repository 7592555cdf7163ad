"""Text edits from the command line: `--text` on edit, expand-fov and video codes, its sweeps, building
directions with `--build-clip-directions` and using them, and the one-line errors for missing files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from sgtool.cli import app
from sgtool.editing import clip_text, styleclip, stylespace
from sgtool.models import load_generator
from sgtool.pipelines.edit.requests import prepare_edits
from sgtool.pipelines.video.edits import ClipEdits
from sgtool.settings import EditOptions
from sgtool.utils.io import to_uint8
from support.clip_models import TINY_CLIP, save_tiny_clip
from support.golden import golden_dir

runner = CliRunner()
TEMPLATES = ["a photo of {}.", "a bad drawing of {}.", "{} in a painting."]
BETA = 0.05  # the golden delta_i_c rows are random: a random text direction finds channels above this


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    """A random tiny CLIP saved as safetensors with its open_clip config as JSON, and a templates file."""
    return save_tiny_clip(tmp_path_factory.mktemp("clip"), TEMPLATES)


@pytest.fixture(scope="module")
def sg3():
    path = golden_dir("generators", "sg3t_64.pkl")
    return path, load_generator(path)


def clip_model_args(folder):
    return ["--clip", folder / "clip.json", "--clip-weights", folder / "clip.safetensors"]


def clip_args(folder):
    """The CLIP model and the prompt templates (text edits; building directions needs no templates)."""
    return [*clip_model_args(folder), "--set", f"templates={folder / 'templates.txt'}"]


def invoke(command, *args):
    return runner.invoke(app, [command, *map(str, args), "--device", "cpu"])


def expected_edit(G, ws, folder, texts, beta=BETA, directions=None):
    """The references' arithmetic done directly: S + sum of alpha x global direction of each prompt."""
    clip = clip_text.load_clip(folder / "clip.safetensors", TINY_CLIP)
    stats = styleclip.load_s_stats(golden_dir("styleclip", "s_stats"))
    delta_i_c = np.load(golden_dir("styleclip", "delta_i_c.npy")) if directions is None else directions
    styles = stylespace.w_to_s(G, torch.as_tensor(ws, dtype=torch.float32)[None])
    for prompt, alpha in texts:
        delta_i = clip.text_direction(prompt, "a face", TEMPLATES)
        direction = styleclip.global_direction(delta_i_c, delta_i, stats.std, beta)
        styles = styleclip.apply_direction(styles, direction, alpha)
    return styles, to_uint8(stylespace.render_s(G, styles, torch.eye(3)))[0]


def test_text_edits_compose_with_each_other_and_with_direction_edits(sg3, clip_files, tmp_path):
    pkl, G = sg3
    ws = np.load(golden_dir("generators", "sg3t_64_io.npz"))["ws"][0]
    np.save(tmp_path / "a_latent.npy", ws)
    direction = np.random.RandomState(1).randn(1, G.w_dim).astype(np.float32)
    np.save(tmp_path / "d.npy", direction)
    out = tmp_path / "out"
    result = invoke("edit", tmp_path / "a_latent.npy", "-n", pkl, "--text", "a smiling face", "--text",
                    "a face with glasses=-2", "--alpha", 3, "--beta", BETA, "--edit", "d=1.5",
                    "--direction", f"d={tmp_path / 'd.npy'}", "--directions", golden_dir("styleclip"),
                    *clip_args(clip_files), "--aligned", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    label = "d+1.5_a_smiling_face+3_a_face_with_glasses-2_b0.05"
    outputs = summary["items"][0]["outputs"]
    assert sorted(outputs) == sorted([str(out / f"a_{label}.png"), str(out / f"a_{label}_styles.npz")])
    texts = summary["text_edits"]
    assert [(t["prompt"], t["alpha"], t["beta"]) for t in texts] == [("a smiling face", 3.0, BETA),
                                                                     ("a face with glasses", -2.0, BETA)]
    assert all(t["channels"] > 0 and t["delta_i_c"].endswith("delta_i_c.npy") for t in texts)

    edited_ws = ws + 1.5 * direction  # the W edit first, then the text edits in S
    styles, image = expected_edit(G, edited_ws, clip_files, [("a smiling face", 3.0), ("a face with glasses", -2.0)])
    written = np.asarray(Image.open(out / f"a_{label}.png"))
    assert np.abs(written.astype(int) - image.astype(int)).max() <= 1
    saved = stylespace.load_s(out / f"a_{label}_styles.npz", G)
    for name, values in styles.items():
        np.testing.assert_allclose(saved[name].numpy(), values.numpy(), atol=1e-5)
    plain = to_uint8(stylespace.render_s(G, stylespace.w_to_s(G, torch.from_numpy(edited_ws)[None]), torch.eye(3)))
    assert np.abs(written.astype(int) - plain[0].astype(int)).max() > 10  # the text edits moved the picture


def test_alpha_and_beta_sweeps(sg3, clip_files, tmp_path):
    pkl, G = sg3
    ws = np.load(golden_dir("generators", "sg3t_64_io.npz"))["ws"][:1]
    np.save(tmp_path / "a_latent.npy", ws[0])
    common = [tmp_path / "a_latent.npy", "-n", pkl, "--text", "an old face", "--directions", golden_dir("styleclip"),
              *clip_args(clip_files), "--aligned", "--beta", BETA]
    result = invoke("edit", *common, "--sweep", "alpha=-4:4:3", "-o", tmp_path / "alpha", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["grid"] == str(tmp_path / "alpha" / "sweep_alpha_an_old_face_b0.05.png")
    grid = np.asarray(Image.open(json.loads(result.stdout)["grid"]))
    header = grid.shape[0] - 64
    columns = [grid[header:, 64 * k:64 * (k + 1)] for k in range(3)]
    plain = to_uint8(stylespace.render_s(G, stylespace.w_to_s(G, torch.from_numpy(ws)), torch.eye(3)))[0]
    assert np.abs(columns[1].astype(int) - plain.astype(int)).max() <= 1  # alpha 0: no edit
    _, strongest = expected_edit(G, ws[0], clip_files, [("an old face", 4.0)])
    assert np.abs(columns[2].astype(int) - strongest.astype(int)).max() <= 1

    result = invoke("edit", *common, "--sweep", "beta=0.02:0.08:2", "-o", tmp_path / "beta", "--json")
    assert result.exit_code == 0, result.output
    grid = np.asarray(Image.open(json.loads(result.stdout)["grid"]))
    _, at_002 = expected_edit(G, ws[0], clip_files, [("an old face", 4.0)], beta=0.02)
    assert np.abs(grid[header:, :64].astype(int) - at_002.astype(int)).max() <= 1

    result = invoke("edit", tmp_path / "a_latent.npy", "-n", pkl, "--sweep", "alpha=-4:4:3", "-o", tmp_path / "x")
    assert result.exit_code == 2 and "add --text" in result.output


def test_built_directions_drive_edit_and_expand_fov(sg3, clip_files, tmp_path):
    pkl, G = sg3
    dirs = tmp_path / "dirs"
    result = invoke("directions", "styleclip", "-n", pkl, *clip_model_args(clip_files), "--samples", 1,
                    "--set", "stats_samples=200", "-o", dirs, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "done" and summary["channels"] == 219
    assert sorted(p.name for p in dirs.iterdir()) == ["clip_directions.json", "delta_i_c.npy", "s_stats"]
    again = invoke("edit", "--build-clip-directions", "-n", pkl, *clip_model_args(clip_files), "--samples", 1,
                   "--set", "stats_samples=200", "-o", dirs)  # the old spelling: the same build, already done
    assert again.exit_code == 0 and "already built" in again.output
    assert "`sgtool edit --build-clip-directions` is now `sgtool directions styleclip`" in again.output

    ws = np.load(golden_dir("generators", "sg3t_64_io.npz"))["ws"][1]
    np.save(tmp_path / "b_latent.npy", ws)
    args = [tmp_path / "b_latent.npy", "-n", pkl, "--text", "a face with curly hair", "--alpha", 3, "--beta", 0.0,
            "--directions", dirs, *clip_args(clip_files)]
    result = invoke("edit", *args, "--aligned", "-o", tmp_path / "edit", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["text_edits"][0]["delta_i_c"] == str(dirs / "delta_i_c.npy")
    stats = styleclip.load_s_stats(dirs / "s_stats")
    clip = clip_text.load_clip(clip_files / "clip.safetensors", TINY_CLIP)
    delta_i = clip.text_direction("a face with curly hair", "a face", TEMPLATES)
    direction = styleclip.global_direction(np.load(dirs / "delta_i_c.npy"), delta_i, stats.std, 0.0)
    styles = styleclip.apply_direction(stylespace.w_to_s(G, torch.from_numpy(ws)[None]), direction, 3.0)
    image = to_uint8(stylespace.render_s(G, styles, torch.eye(3)))[0]
    name = "b_a_face_with_curly_hair+3_b0.png"
    assert np.abs(np.asarray(Image.open(tmp_path / "edit" / name)).astype(int) - image.astype(int)).max() <= 1

    result = invoke("expand-fov", *args, "--all", 16, "-o", tmp_path / "fov", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["text_edits"][0]["prompt"] == "a face with curly hair"
    canvas = np.asarray(Image.open(tmp_path / "fov" / "b_a_face_with_curly_hair+3_b0_fov.png"))
    assert canvas.shape[:2] == (96, 96)
    assert np.abs(canvas[16:80, 16:80].astype(int) - image.astype(int)).max() <= 1  # the centre is the edit


def test_video_edits_fade_text_edits_in_through_stylespace(sg3, clip_files):
    _, G = sg3
    options = EditOptions(texts=["a smiling face"], beta=BETA, clip_directions=golden_dir("styleclip"),
                          clip=str(clip_files / "clip.json"), clip_weights=str(clip_files / "clip.safetensors"),
                          templates=str(clip_files / "templates.txt"))
    edits = ClipEdits(G, options, ramp_seconds=1.0, fps=2, hint="sg3t_64.pkl")
    ws = torch.from_numpy(np.load(golden_dir("generators", "sg3t_64_io.npz"))["ws"][:3])
    codes = edits.edit(G, ws, [0, 1, 2])  # ramp factors 0, 0.5, 1
    plain = stylespace.w_to_s(G, ws)
    full = prepare_edits(G, options, "sg3t_64.pkl").edit(G, ws)
    for name in plain:
        torch.testing.assert_close(codes[name][0], plain[name][0])
        torch.testing.assert_close(codes[name][1], (plain[name][1] + full[name][1]) / 2)
        torch.testing.assert_close(codes[name][2], full[name][2])
    assert edits.records()["text_edits"][0]["alpha"] == 4.0


def test_missing_clip_files_fail_before_the_generator_loads(sg3, clip_files, tmp_path, monkeypatch):
    pkl, _ = sg3
    monkeypatch.setenv("SGTOOL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SGTOOL_OFFLINE", "1")
    monkeypatch.delenv("SGTOOL_MODELS_REGISTRY", raising=False)

    def no_generator(*args, **kwargs):
        raise AssertionError("the generator was loaded before the CLIP files were checked")

    monkeypatch.setattr("sgtool.pipelines.edit.run.load_generator", no_generator)
    np.save(tmp_path / "a_latent.npy", np.zeros((16, 32), np.float32))
    base = ["edit", tmp_path / "a_latent.npy", "-n", pkl, "--text", "a smiling face", "-o", tmp_path / "out"]
    result = invoke(*base, "--set", f"templates={clip_files / 'templates.txt'}")
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert "clip-vit-b-32-openai" in message and str(tmp_path / "home" / "models") in message
    assert "Traceback" not in result.output

    result = invoke(*base, *clip_args(clip_files), "--directions", tmp_path)
    assert result.exit_code == 2 and "delta_i_c.npy + s_stats" in result.output and "sgtool directions styleclip" in \
        result.output
    assert not (tmp_path / "out").exists()


def test_unknown_generator_without_directions_says_how_to_build_them(clip_files, tmp_path):
    np.save(tmp_path / "a_latent.npy", np.zeros((16, 32), np.float32))
    pkl = golden_dir("generators", "sg3t_64.pkl")
    result = invoke("edit", tmp_path / "a_latent.npy", "-n", pkl, "--text", "a smiling face", *clip_args(clip_files),
                    "-o", tmp_path / "out")
    assert result.exit_code == 2 and "sgtool directions styleclip" in result.output
