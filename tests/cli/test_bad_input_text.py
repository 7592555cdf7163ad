"""Bad input to text edits and their directions: crafted statistics, CLIP configs and weights, templates and a
damaged resumable build, each one line (exit 2) with nothing changed on disk."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
from typer.testing import CliRunner

from support.clip_models import TINY_CLIP, save_tiny_clip
from support.golden import golden_dir
from sgtool.cli import app

runner = CliRunner()
SG2 = golden_dir("generators", "sg2_64.pkl")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip"), ["a photo of {}."])


def _check(result, *needles):
    text = result.stderr.strip()
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(text.splitlines()) == 1, text
    for needle in needles:
        assert needle in text, (needle, text)


@pytest.mark.parametrize("template", ["a {name} photo", "{} and {}", "a {0} photo", "{!r}", "{:>10}", "a { photo"])
def test_templates_need_exactly_one_plain_field(tmp_path, template):
    from sgtool.editing.clip_text import load_templates
    from sgtool.errors import SgtoolError

    (tmp_path / "t.txt").write_text(f"a photo of {{}}.\n{template}\n")
    with pytest.raises(SgtoolError, match="one {} for the text") as refused:
        load_templates(tmp_path / "t.txt")
    assert repr(template) in str(refused.value)
    (tmp_path / "ok.txt").write_text("a photo of {}.\n{{literal}} braces around {}\n")
    assert load_templates(tmp_path / "ok.txt")[1].format("x") == "{literal} braces around x"


@pytest.mark.parametrize("change, needle", [
    (lambda c: c["vision_cfg"].update(patch_size=0), "patch_size = 0"),
    (lambda c: c["vision_cfg"].update(image_size=33), "not a multiple of patch_size"),
    (lambda c: c["text_cfg"].update(width=-8), "text_cfg.width = -8"),
    (lambda c: c["text_cfg"].update(width=30, heads=4), "not a multiple of heads"),
    (lambda c: c.update(embed_dim=10 ** 9), "embed_dim = 1000000000"),
    (lambda c: c["text_cfg"].update(layers=2.5), "text_cfg.layers = 2.5"),
])
def test_crafted_clip_configs_are_one_line(clip, tmp_path, change, needle):
    config = json.loads(json.dumps(TINY_CLIP))
    change(config)
    (tmp_path / "c.json").write_text(json.dumps(config))
    result = runner.invoke(app, ["directions", "styleclip", "-n", str(SG2), "--clip", str(tmp_path / "c.json"),
                                 "--clip-weights", str(clip / "clip.safetensors"), "-o", str(tmp_path / "dirs")])
    _check(result, needle)
    assert not (tmp_path / "dirs").exists()


def test_a_deeply_nested_clip_config_is_one_line(clip, tmp_path):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    result = runner.invoke(app, ["directions", "styleclip", "-n", str(SG2), "--clip", str(tmp_path / "deep.json"),
                                 "--clip-weights", str(clip / "clip.safetensors"), "-o", str(tmp_path / "dirs")])
    _check(result, "is not readable JSON")


def _safetensors(path, header: dict | bytes, payload: bytes = b"", length: int | None = None):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + payload)
    return path


@pytest.mark.parametrize("name, header, payload, length", [
    ("badjson", b"{not json", b"", None),
    ("outside", {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 4096]}}, b"\0" * 16, None),
    ("overlap", {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                 "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, None),
    ("size", {"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, None),
    ("huge", {"w": {"dtype": "F32", "shape": [2 ** 62, 2 ** 62], "data_offsets": [0, 8]}}, b"\0" * 8, None),
    ("longheader", b"{}", b"", 128 * 2 ** 20),
])
def test_crafted_clip_safetensors_are_one_line(clip, tmp_path, name, header, payload, length):
    weights = _safetensors(tmp_path / f"{name}.safetensors", header, payload, length)
    result = runner.invoke(app, ["directions", "styleclip", "-n", str(SG2), "--clip", str(clip / "clip.json"),
                                 "--clip-weights", str(weights), "-o", str(tmp_path / "dirs")])
    _check(result, weights.name)
    assert not (tmp_path / "dirs").exists()


@pytest.mark.parametrize("pose", [{"theta": "abc", "x": 0.0, "y": 0.0}, {"theta": np.complex64(1j), "x": 0.0, "y": 0.0},
                                  {"theta": float("nan"), "x": 0.0, "y": 0.0}])
def test_s_stats_with_text_complex_or_nan_poses_are_one_line(clip, tmp_path, pose):
    from sgtool.editing.styleclip import load_s_stats
    from sgtool.errors import SgtoolError

    path = tmp_path / "s_stats"
    with open(path, "wb") as f:
        pickle.dump([pose, {"L0": np.zeros(4, np.float32)}, {"L0": np.ones(4, np.float32)}], f)
    with pytest.raises(SgtoolError, match="finite numbers theta, x and y"):
        load_s_stats(path)


@pytest.mark.parametrize("rows, needle", [
    (np.full((4, 8), np.nan, np.float32), "does not hold finite rows"),
    (np.array([[1, 2], [3]], dtype=object), "is not a saved chunk of rows"),
    (np.zeros((3, 8), np.float32), "holds 3 rows"),
])
def test_a_damaged_resumable_build_is_one_line_and_left_alone(clip, tmp_path, rows, needle):
    from sgtool.editing.clip_text import clip_model, load_clip
    from sgtool.models import load_generator
    from sgtool.pipelines.directions import styleclip

    args = ["directions", "styleclip", "-n", str(SG2), "--clip", str(clip / "clip.json"), "--clip-weights",
            str(clip / "clip.safetensors"), "--samples", "1", "--set", "stats_samples=20", "-o", str(tmp_path / "d")]
    calls = []

    def stop_after_first_chunk():
        calls.append(1)
        return len(calls) > 1

    # A build stopped after its first chunk of channels leaves a .partial folder to resume from.
    encoder = load_clip(clip / "clip.safetensors", clip_model(str(clip / "clip.json")))
    options = styleclip.BuildOptions(samples=1, stats_samples=20, chunk_channels=4)
    summary = styleclip.build_clip_directions(load_generator(SG2), encoder, tmp_path / "d", options,
                                              stop=stop_after_first_chunk)
    assert summary["status"] == "interrupted"
    partial = next((tmp_path / "d").glob("*.partial"))
    chunk = sorted(partial.glob("rows_*.npy"))[0]
    np.save(chunk, rows, allow_pickle=rows.dtype == object)
    before = {p: p.read_bytes() for p in (tmp_path / "d").rglob("*") if p.is_file()}
    _check(runner.invoke(app, args), needle, chunk.name)
    assert {p: p.read_bytes() for p in (tmp_path / "d").rglob("*") if p.is_file()} == before
