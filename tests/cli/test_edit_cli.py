"""`sgtool edit` and `sgtool directions` end to end on the golden generators: outputs, sweeps, animation,
transforms, SeFa, boundaries, and the old `edit` spellings of the tasks that moved."""

from __future__ import annotations

import json

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from sgtool.cli import app
from sgtool.editing import apply_style_edits, capture_styles, render_styles, style_layers
from sgtool.editing.stylespace import StyleEdit, load_s
from sgtool.geometry import input_transform
from sgtool.models import load_generator
from sgtool.utils.io import to_uint8

runner = CliRunner()
_CACHE: dict = {}


def _fixture_files(golden_generator_files, tmp_path, name):
    """Two latent files, a bad one and a W direction beside them."""
    pkl, _, io, _ = golden_generator_files(name)
    if name not in _CACHE:
        _CACHE[name] = load_generator(pkl)
    ws = io["ws"][:2]
    np.save(tmp_path / "a_latent.npy", ws[0])
    np.save(tmp_path / "b_latent.npy", ws[1])
    (tmp_path / "bad_latent.npy").write_bytes(b"not a numpy file")
    direction = np.random.RandomState(5).randn(1, 32).astype(np.float32)
    np.save(tmp_path / "dir.npy", direction)
    return pkl, _CACHE[name], ws, direction


@pytest.fixture
def sg3(golden_generator_files, tmp_path):
    return _fixture_files(golden_generator_files, tmp_path, "sg3t_64")


@pytest.fixture
def sg2(golden_generator_files, tmp_path):
    """StyleGAN2 renders 10x faster on this CPU: used where nothing StyleGAN3-specific is tested."""
    return _fixture_files(golden_generator_files, tmp_path, "sg2_64")


def png(path):
    return np.asarray(Image.open(path))


def synth(G, ws, **kwargs):
    with torch.no_grad():
        return to_uint8(G.synthesis(torch.as_tensor(ws, dtype=torch.float32), noise_mode="const", **kwargs))


def invoke(*args):
    return runner.invoke(app, ["edit", *map(str, args), "--device", "cpu"])


def sgtool(*args):
    return runner.invoke(app, list(map(str, args)))


def test_edit_writes_named_outputs_equal_to_manual_edit(sg2, tmp_path):
    pkl, G, ws, d = sg2
    np.save(tmp_path / "dir2.npy", np.ones(32, np.float32))
    out = tmp_path / "out"
    result = invoke(tmp_path / "a_latent.npy", tmp_path / "bad_latent.npy", tmp_path / "b_latent.npy",
                    "--network", pkl, "--direction", f"foo={tmp_path / 'dir.npy'}",
                    "--direction", f"bar={tmp_path / 'dir2.npy'}", "--edit", "foo=+2", "--edit", "bar=-0.5",
                    "--layers", "0-5", "--outdir", out, "--json")
    assert result.exit_code == 1, result.stderr  # the bad file fails, the batch goes on
    summary = json.loads(result.stdout)
    assert [(item["name"], item["status"]) for item in summary["items"]] == [("a", "ok"), ("bad", "failed"),
                                                                             ("b", "ok")]
    assert len(summary["failed"]) == 1 and "bad_latent.npy" in summary["failed"][0]["error"]
    for i, name in enumerate("ab"):
        expected = ws[i].copy()
        expected[:6] = ws[i][:6] + (2 * d[0] + -0.5 * np.ones(32, np.float32))
        latent = np.load(out / f"{name}_foo+2_bar-0.5.npy")
        np.testing.assert_allclose(latent, expected, atol=1e-6, rtol=0)
        np.testing.assert_array_equal(latent[6:], ws[i][6:])
        image = png(out / f"{name}_foo+2_bar-0.5.png")
        assert np.abs(image.astype(int) - synth(G, expected[None])[0].astype(int)).max() <= 1
    record = json.loads((out / "edits.json").read_text())
    assert record["edits"] == [{"name": "foo", "strength": 2.0, "direction": str(tmp_path / "dir.npy")},
                               {"name": "bar", "strength": -0.5, "direction": str(tmp_path / "dir2.npy")}]
    assert record["settings"]["layers"] == [0, 1, 2, 3, 4, 5]
    assert record["items"][0]["outputs"] == [str(out / "a_foo+2_bar-0.5.png"), str(out / "a_foo+2_bar-0.5.npy")]
    assert "failed" in result.stderr


def test_unknown_direction_lists_known_names(sg3, tmp_path):
    pkl, _, _, _ = sg3
    result = invoke(tmp_path / "a_latent.npy", "--network", pkl, "--edit", "wisdom=+1",
                    "--direction", f"mine={tmp_path / 'dir.npy'}", "--outdir", tmp_path / "out")
    assert result.exit_code == 2
    assert "unknown direction 'wisdom' for stylegan3-ffhq; known: age, eyeglasses, gender, Male, mine, pose, smile" \
        in result.stderr.replace("\n", " ")
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,message", [
    ([], "nothing to do"),
    (["--edit", "x=up"], "--edit expects NAME=STRENGTH"),
    (["-e", "foo=1"], "foo=1 does not exist"),  # -e is --encoder in every command (edit: for photo inputs)
    (["--edit", "foo=1", "--edit", "foo=2"], "names a direction twice"),
    (["--edit", "foo=1", "--sweep", "foo=-1:1:3"], "also appears in --edit"),
    (["--edit", "foo=1", "--layers", "0-99"], "out of range"),
    (["--edit", "foo=1", "--mode", "wplus"], "--mode wplus needs"),
    (["--style", "L99:1=2"], "unknown style layer"),
])
def test_bad_usage_exits_2(sg2, tmp_path, args, message):
    pkl, _, _, _ = sg2
    result = invoke(tmp_path / "a_latent.npy", "--network", pkl, "--direction", f"foo={tmp_path / 'dir.npy'}",
                    "--outdir", tmp_path / "out", *args)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr.replace("\n", " ")
    assert not (tmp_path / "out").exists()


def test_missing_latent_file_is_reported_before_anything_loads(tmp_path, monkeypatch):
    # The default network and the registry's 'age' direction would need downloads: none may start.
    monkeypatch.setenv("SGTOOL_CACHE", str(tmp_path / "cache"))
    result = invoke(tmp_path / "nope_latent.npy", "--edit", "age=+2", "--outdir", tmp_path / "out")
    assert result.exit_code == 2
    assert "nope_latent.npy: no such file or directory" in result.stderr.replace("\n", " ")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("target,message", [("bad_latent.npy", "bad_latent.npy is not a readable .npy file"),
                                            (".", "is a directory; give the latent files in it")])
def test_a_lone_bad_latent_file_or_a_directory_is_one_line_and_exit_2(sg2, tmp_path, target, message):
    pkl, _, _, _ = sg2
    result = invoke(tmp_path / target, "--network", pkl, "--direction", f"foo={tmp_path / 'dir.npy'}",
                    "--edit", "foo=1", "--outdir", tmp_path / "out")
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_set_converts_range_and_list_settings(sg2, tmp_path):
    pkl, _, _, _ = sg2
    result = sgtool("directions", "sefa", "--network", pkl, "--top", "2", "--set", "layers=1-2",
                    "--set", "preview=-2:2:3", "--outdir", tmp_path / "sefa", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["layers"] == [1, 2] and summary["settings"]["layers"] == [1, 2]
    assert summary["preview_strengths"] == [-2.0, 0.0, 2.0] and summary["settings"]["preview"] == [-2.0, 2.0, 3]
    assert png(summary["preview"]).shape[1] == 3 * 64


@pytest.mark.parametrize("command,item,key", [
    ("directions sefa", "layers=3-1", "layers"), ("directions sefa", "layers=0-x", "layers"),
    ("directions sefa", "preview=1:2", "preview"), ("directions sefa", "preview=-2:2:1", "preview"),
    ("directions sefa", "sefa_preview=-2:2:1", "preview"), ("directions sefa", "top=0", "top"),
    ("edit", "edits=[age]", "edits"), ("edit", "mode=wide", "mode"), ("edit", "nosuch=1", "nosuch"),
    ("edit", "top=3", "top"), ("mix", "layers=0-x", "layers"), ("directions boundary", "ratio=0", "ratio")])
def test_bad_set_values_are_one_line_exit_2_and_nothing_written(sg2, tmp_path, command, item, key):
    pkl, _, _, _ = sg2
    network = [] if command == "directions boundary" else ["--network", pkl]
    inputs = {"edit": [tmp_path / "a_latent.npy"], "directions boundary": [tmp_path / "scores.csv"]}.get(command, [])
    result = sgtool(*command.split(), *inputs, *network, "--set", item, "--outdir", tmp_path / "sefa")
    assert result.exit_code == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and f"setting {key}" in result.stderr.replace("'", "")
    assert not (tmp_path / "sefa").exists()


def test_sweep_grid_and_animation(sg2, tmp_path):
    pkl, G, ws, d = sg2
    out = tmp_path / "out"
    result = invoke(tmp_path / "a_latent.npy", tmp_path / "b_latent.npy", "--network", pkl,
                    "--direction", f"foo={tmp_path / 'dir.npy'}", "--sweep", "foo=-2:2:3", "--animate",
                    "--outdir", out, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    grid = png(summary["grid"])
    header = grid.shape[0] - 2 * 64
    assert grid.shape == (header + 2 * 64, 3 * 64, 3) and 10 <= header <= 40
    for col in range(3):  # every column has a drawn label
        assert (grid[:header, col * 64:(col + 1) * 64] < 128).any()
    strengths = np.float32([-2, 0, 2])
    expected = synth(G, np.stack([w + s * d[0] for w in ws for s in strengths]))
    for row in range(2):
        for col in range(3):
            cell = grid[header + row * 64:header + (row + 1) * 64, col * 64:(col + 1) * 64]
            assert np.abs(cell.astype(int) - expected[row * 3 + col].astype(int)).max() <= 1
    assert len(summary["animations"]) == 2
    reader = imageio.get_reader(summary["animations"][0], format="FFMPEG")
    frames = [frame for frame in reader]
    reader.close()
    assert len(frames) == 3 and frames[0].shape == (64, 64, 3)
    # Lossy H.264 of a noisy random net: check each frame is nearest to its own strength's picture.
    cells = [grid[header:header + 64, col * 64:(col + 1) * 64].astype(float) for col in range(3)]
    for k, frame in enumerate(frames):
        assert int(np.argmin([np.abs(frame.astype(float) - cell).mean() for cell in cells])) == k


def test_unaligned_rendering_from_alignment_json_and_sg3_editing_files(sg3, tmp_path):
    pkl, G, ws, d = sg3
    inverse = input_transform((0.1, -0.05), 12)
    (tmp_path / "alignment.json").write_text(json.dumps(
        {"faces": [{"aligned": "x/a.png", "inverse_transform": inverse.tolist()}], "failed": []}))
    np.save(tmp_path / "c_latent.npy", ws[1])
    out = tmp_path / "out"
    # A latent the transforms file does not know fails alone (exit 1); the others are rendered unaligned.
    result = invoke(tmp_path / "a_latent.npy", tmp_path / "c_latent.npy", "--network", pkl,
                    "--direction", f"foo={tmp_path / 'dir.npy'}", "--edit", "foo=+1",
                    "--transforms", tmp_path / "alignment.json", "--outdir", out)
    assert result.exit_code == 1
    assert "no landmarks transform for 'c_latent.npy'" in result.stderr.replace("\n", " ")
    expected = synth(G, (ws[0] + d)[None], transform=torch.from_numpy(inverse).float())[0]
    assert np.abs(png(out / "a_foo+1.png").astype(int) - expected.astype(int)).max() <= 1
    assert not np.array_equal(expected, synth(G, (ws[0] + d)[None])[0])
    assert not (out / "c_foo+1.png").exists()

    # stylegan3-editing: latents.npy {file: [per-step latents]}, transforms {file: (..., inverse)}.
    np.save(tmp_path / "latents.npy", np.array({"b.jpg": [ws[0], ws[1]]}, dtype=object), allow_pickle=True)
    np.save(tmp_path / "lt.npy", np.array({"b.jpg": (12.0, np.zeros(2), np.linalg.inv(inverse), inverse)},
                                          dtype=object), allow_pickle=True)
    result = invoke(tmp_path / "latents.npy", "--network", pkl, "--direction", f"foo={tmp_path / 'dir.npy'}",
                    "--edit", "foo=0", "--transforms", tmp_path / "lt.npy", "--outdir", out)
    assert result.exit_code == 0, result.stderr
    expected = synth(G, ws[1][None], transform=torch.from_numpy(inverse).float())[0]
    assert np.abs(png(out / "b_foo+0.png").astype(int) - expected.astype(int)).max() <= 1

    # --aligned ignores transforms.
    result = invoke(tmp_path / "c_latent.npy", "--network", pkl, "--direction", f"foo={tmp_path / 'dir.npy'}",
                    "--edit", "foo=0", "--transforms", tmp_path / "lt.npy", "--aligned", "--outdir", out)
    assert result.exit_code == 0
    assert np.abs(png(out / "c_foo+0.png").astype(int) - synth(G, ws[1][None])[0].astype(int)).max() <= 1


def test_transform_recorded_by_invert_is_used(sg3, tmp_path):
    pkl, G, ws, _ = sg3
    inverse = input_transform((-0.1, 0.0), -20)
    (tmp_path / "invert.json").write_text(json.dumps(
        {"items": [{"name": "a", "status": "ok", "outputs": [str(tmp_path / "a_latent.npy")],
                    "inverse_transform": inverse.tolist()}], "latents": None}))
    result = invoke(tmp_path / "a_latent.npy", "--network", pkl, "--direction", f"foo={tmp_path / 'dir.npy'}",
                    "--edit", "foo=0", "--outdir", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    expected = synth(G, ws[0][None], transform=torch.from_numpy(inverse).float())[0]
    assert np.abs(png(tmp_path / "out" / "a_foo+0.png").astype(int) - expected.astype(int)).max() <= 1


def test_stylegan2_refuses_transforms(golden_generator_files, tmp_path):
    pkl, _, io, _ = golden_generator_files("sg2_64")
    np.save(tmp_path / "a_latent.npy", io["ws"][0])
    np.save(tmp_path / "d.npy", np.ones(32, np.float32))
    (tmp_path / "alignment.json").write_text(json.dumps({"faces": [{"aligned": "a.png",
                                                                    "inverse_transform": np.eye(3).tolist()}]}))
    result = invoke(tmp_path / "a_latent.npy", "--network", pkl, "--direction", f"d={tmp_path / 'd.npy'}",
                    "--edit", "d=1", "--transforms", tmp_path / "alignment.json", "--outdir", tmp_path / "out")
    assert result.exit_code == 2
    assert "needs a StyleGAN3 network" in result.stderr
    assert not list((tmp_path).glob("out/*.png"))
    # A transform that invert recorded beside the latents is not asked for: StyleGAN2 renders the aligned view.
    (tmp_path / "invert.json").write_text(json.dumps({"items": [{"name": "a", "inverse_transform": np.eye(3).tolist()}]}))
    result = invoke(tmp_path / "a_latent.npy", "--network", pkl, "--direction", f"d={tmp_path / 'd.npy'}",
                    "--edit", "d=1", "--outdir", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["items"][0]["entries"][0]["transform"] is None


def test_style_edit_cli(sg3, tmp_path):
    pkl, G, ws, _ = sg3
    out = tmp_path / "out"
    layer = style_layers(G)[3]
    result = invoke(tmp_path / "a_latent.npy", "--network", pkl, "--style", f"{layer.name}:4=+1.5",
                    "--set", "style_units=raw", "--outdir", out)
    assert result.exit_code == 0, result.stderr
    styles, _ = capture_styles(G, torch.from_numpy(ws[:1]))
    edited = apply_style_edits(styles, [StyleEdit(layer.name, 4, 1.5, 3)])
    expected = to_uint8(render_styles(G, edited))[0]
    image = png(out / "a_s3c4+1.5.png")
    assert np.abs(image.astype(int) - expected.astype(int)).max() <= 1
    saved = load_s(out / "a_s3c4+1.5_styles.npz", G)  # the references' StyleSpace, keyed by layer name
    assert list(saved) == [lay.name for lay in style_layers(G)]
    np.testing.assert_allclose(saved[layer.name][0].numpy(), edited[3][0].numpy())


def test_directions_sefa_cli(sg2, tmp_path):
    pkl, G, _, _ = sg2
    out = tmp_path / "sefa"
    result = sgtool("directions", "sefa", "--network", pkl, "--top", "3", "--set", "preview=[-3,3,3]",
                    "--outdir", out, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert [p.rsplit("/", 1)[1] for p in summary["directions"]] == ["sefa_00.npy", "sefa_01.npy", "sefa_02.npy"]
    vectors = np.stack([np.load(p)[0] for p in summary["directions"]])
    np.testing.assert_allclose(vectors @ vectors.T, np.eye(3), atol=1e-5)
    assert summary["eigenvalues"] == sorted(summary["eigenvalues"], reverse=True)
    preview = png(summary["preview"])
    assert preview.shape[1] == 3 * 64 and (preview.shape[0] - 3 * 64) in range(10, 41)
    assert json.loads((out / "sefa.json").read_text())["preview_latent"] == "seed0"


def _scores_csv(tmp_path):
    """300 latents scored along a planted direction (a little noise): the CSV and the direction."""
    rng = np.random.RandomState(1)
    planted = rng.randn(8)
    planted /= np.linalg.norm(planted)
    lines = ["latent,score"]
    for i in range(300):
        w = rng.randn(8).astype(np.float32)
        np.save(tmp_path / f"s{i}_latent.npy", np.repeat(w[None], 4, axis=0))
        lines.append(f"s{i}_latent.npy,{float(w @ planted + 0.02 * rng.randn()):.6f}")
    (tmp_path / "smile.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "smile.csv", planted


def test_directions_boundary_cli(tmp_path):
    scores, planted = _scores_csv(tmp_path)
    out = tmp_path / "b"
    result = sgtool("directions", "boundary", scores, "--set", "ratio=0.3", "--outdir", out)
    assert result.exit_code == 0, result.stderr
    assert "held-out accuracy" in result.stderr and f"--direction smile={out / 'smile_boundary.npy'}" in \
        result.stderr.replace("\n", "")
    boundary = np.load(out / "smile_boundary.npy")
    assert boundary.shape == (1, 8)
    assert float(boundary[0] @ planted) > 0.95
    record = json.loads((out / "smile_boundary.json").read_text())
    assert record["val_accuracy"] > 0.9 and record["train_per_class"] == 63
    (tmp_path / "broken.csv").write_text("latent,score\nmissing_latent.npy,1.0\n")
    result = sgtool("directions", "boundary", tmp_path / "broken.csv", "--outdir", out)
    assert result.exit_code == 2 and "missing_latent.npy does not exist" in result.stderr


def test_old_edit_spellings_run_the_moved_tasks_and_name_the_new_command(sg2, tmp_path):
    pkl, _, _, _ = sg2
    old = invoke("--network", pkl, "--discover", "sefa", "--top", "2", "--set", "sefa_preview=-2:2:3",
                 "--outdir", tmp_path / "old", "--json")
    new = sgtool("directions", "sefa", "--network", pkl, "--top", "2", "--set", "preview=-2:2:3",
                 "--outdir", tmp_path / "new", "--json", "--device", "cpu")
    assert old.exit_code == 0 and new.exit_code == 0, old.stderr + new.stderr
    assert "`sgtool edit --discover` is now `sgtool directions sefa`" in old.stderr and "now" not in new.stderr
    for name in ("sefa_00.npy", "sefa_01.npy", "sefa_preview.png"):
        assert (tmp_path / "old" / name).read_bytes() == (tmp_path / "new" / name).read_bytes()
    scores, _ = _scores_csv(tmp_path)
    result = invoke("--train-boundary", scores, "--set", "boundary_ratio=0.3", "--outdir", tmp_path / "b")
    assert result.exit_code == 0, result.stderr
    assert "`sgtool edit --train-boundary` is now `sgtool directions boundary`" in result.stderr
    assert (tmp_path / "b" / "smile_boundary.npy").is_file()
    result = invoke("--mix", tmp_path / "a_latent.npy", tmp_path / "b_latent.npy", "-n", pkl, "--layers", "0-3",
                    "--outdir", tmp_path / "mix")
    assert result.exit_code == 0, result.stderr
    assert "`sgtool edit --mix` is now `sgtool mix`" in result.stderr and (tmp_path / "mix" / "mix_grid.png").is_file()


def test_edit_help_lists_only_options_that_apply_edits():
    edit_help = sgtool("edit", "--help").stdout
    for option in ("--edit", "--style", "--text", "--sweep", "--animate", "--transforms", "--face"):
        assert option in edit_help
    for moved in ("--mix", "--discover", "--top", "--samples", "--train-boundary", "--build-clip-directions"):
        assert moved not in edit_help
    assert "--rows" in sgtool("mix", "--help").stdout
    listing = sgtool("directions", "--help").stdout
    assert all(name in listing for name in ("sefa", "boundary", "styleclip"))
