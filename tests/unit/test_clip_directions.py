"""Building StyleCLIP direction files for any generator: the references' recipe, the official layouts, resuming."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from sgtool.editing import clip_text, styleclip, stylespace
from sgtool.errors import SgtoolError
from sgtool.models import load_generator
from sgtool.pipelines.directions.styleclip import (BuildOptions, build_clip_directions, channel_features,
                                              delta_rows, direction_channels)
from sgtool.progress import Reporter
from support.clip_models import TINY_CLIP, random_clip
from support.golden import golden_dir

OPTIONS = BuildOptions(samples=1, stats_samples=200, batch_size=32, chunk_channels=48)
TEMPLATES = ["a photo of a {}.", "a rendering of a {}."]


class Recorder(Reporter):
    def __init__(self):
        self.tasks = []

    def start(self, label, total=None):
        self.tasks.append([label, total, 0])

    def advance(self, count=1, info=""):
        self.tasks[-1][2] += count


@pytest.fixture(scope="module")
def clip():
    return clip_text.ClipEncoder(*random_clip(TINY_CLIP, seed=3))


@pytest.fixture(scope="module")
def sg2():
    return load_generator(golden_dir("generators", "sg2_64.pkl"))


@pytest.fixture(scope="module")
def built(sg2, clip, tmp_path_factory):
    outdir = tmp_path_factory.mktemp("dirs")
    reporter = Recorder()
    summary = build_clip_directions(sg2, clip, outdir, OPTIONS, hint="sg2_64.pkl", reporter=reporter)
    return outdir, summary, reporter


def test_delta_rows_are_the_references_arithmetic():
    rng = np.random.RandomState(0)
    features = rng.randn(3, 4, 2, 6).astype(np.float32)
    features[2, :, 1] = features[2, :, 0]  # a channel that changes nothing
    unit = features / np.linalg.norm(features, axis=-1, keepdims=True)
    expected = unit[:, :, 1] - unit[:, :, 0]
    expected = (expected[:2] / np.linalg.norm(expected[:2], axis=-1, keepdims=True)).mean(axis=1)
    expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
    rows = delta_rows(features)
    np.testing.assert_allclose(rows[:2], expected, atol=1e-6)
    assert np.array_equal(rows[2], np.zeros(6))


def test_each_channel_is_moved_alone_to_mean_minus_and_plus_strength_std(clip):
    G = load_generator(golden_dir("generators", "sg3t_64.pkl"))
    stats = stylespace.s_statistics(G, 100)
    ws = torch.cat(list(stylespace.sample_ws(G, 1)))
    base = stylespace.w_to_s(G, ws)
    channels = direction_channels(G, stats)
    assert len(channels) == sum(len(v) for v in stats.std.values())  # StyleGAN3: every layer, input included
    chosen = [channels[1], channels[60]]
    features = channel_features(G, clip, base, stats, chosen, strength=5.0, batch_size=3)
    for k, channel in enumerate(chosen):
        for i in range(1):
            for side, sign in ((0, -1), (1, 1)):
                styles = {name: values[i:i + 1].clone() for name, values in base.items()}
                styles[channel.layer][0, channel.index] = (stats.mean[channel.layer][channel.index]
                                                           + sign * 5.0 * stats.std[channel.layer][channel.index])
                expected = clip.encode_images(stylespace.render_s(G, styles))[0].numpy()
                np.testing.assert_allclose(features[k, i, side], expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_built_files_are_the_official_layouts_and_drive_a_text_edit(built, sg2, clip):
    outdir, summary, reporter = built
    assert summary["status"] == "done" and not (outdir / "fs3.npy.partial").exists()
    assert sorted(p.name for p in outdir.iterdir()) == ["S_mean_std", "clip_directions.json", "fs3.npy"]
    with open(outdir / "S_mean_std", "rb") as f:
        _means, stds = pickle.load(f)  # StyleCLIP's / HyperStyle's layout (our own file)
    assert len(stds) == len(stylespace.style_layers(sg2)) and all(s.dtype == np.float32 for s in stds)
    stats = styleclip.load_s_stats(outdir / "S_mean_std")
    delta_i_c = styleclip.load_delta_i_c(outdir / "fs3.npy", stats.std)
    conv_channels = sum(len(v) for k, v in stats.std.items() if not k.endswith(".torgb"))
    assert delta_i_c.shape == (conv_channels, 512) == (summary["channels"], 512)
    assert np.all(np.isfinite(delta_i_c)) and np.allclose(np.linalg.norm(delta_i_c, axis=1), 1, atol=1e-5)
    assert summary["strength"] == 10.0  # not a face generator by its name
    again = build_clip_directions(sg2, clip, outdir, OPTIONS, hint="sg2_64.pkl")
    assert again["status"] == "skipped" and again["delta_i_c"] == summary["delta_i_c"]
    assert [task[:2] for task in reporter.tasks] == [["S statistics", 200], ["CLIP directions", conv_channels]]
    assert [task[2] for task in reporter.tasks] == [200, conv_channels]

    delta_i = clip.text_direction("a smiling face", "a face", TEMPLATES)
    direction = styleclip.global_direction(delta_i_c, delta_i, stats.std, beta=0.05)
    assert styleclip.kept_channels(direction) > 0
    assert all(not direction[name].any() for name in direction if name.endswith(".torgb"))
    ws = torch.cat(list(stylespace.sample_ws(sg2, 1, seed=9)))
    styles = stylespace.w_to_s(sg2, ws)
    edited = stylespace.render_s(sg2, styleclip.apply_direction(styles, direction, 3.0))
    assert torch.isfinite(edited).all() and (edited - stylespace.render_s(sg2, styles)).abs().max() > 1e-3


@pytest.mark.slow
def test_an_interrupted_build_resumes_to_the_same_files(built, sg2, clip, tmp_path):
    reference_dir, reference, _ = built
    summary = build_clip_directions(sg2, clip, tmp_path, OPTIONS, hint="sg2_64.pkl", stop=lambda: True)
    assert summary["status"] == "interrupted" and summary["channels_done"] == OPTIONS.chunk_channels
    assert not (tmp_path / "fs3.npy").exists()
    assert sorted(p.name for p in (tmp_path / "fs3.npy.partial").glob("rows_*")) == ["rows_000000_000048.npy"]
    with pytest.raises(SgtoolError, match="other settings \\(samples differ\\)"):
        build_clip_directions(sg2, clip, tmp_path, BuildOptions(samples=2, stats_samples=200), hint="sg2_64.pkl")
    reporter = Recorder()
    resumed = build_clip_directions(sg2, clip, tmp_path, OPTIONS, hint="sg2_64.pkl", reporter=reporter)
    assert resumed["status"] == "done"
    assert reporter.tasks[-1][:2] == ["CLIP directions (resuming at channel 48)", reference["channels"] - 48]
    np.testing.assert_array_equal(np.load(tmp_path / "fs3.npy"), np.load(reference_dir / "fs3.npy"))
    assert (tmp_path / "S_mean_std").read_bytes() == (reference_dir / "S_mean_std").read_bytes()
    assert not (tmp_path / "fs3.npy.partial").exists()


def test_bad_build_options_are_one_line():
    with pytest.raises(SgtoolError, match="samples must be at least 1"):
        BuildOptions(samples=0)
    with pytest.raises(SgtoolError, match="strength must be a positive"):
        BuildOptions(strength=float("nan"))
