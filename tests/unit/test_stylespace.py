"""StyleSpace in the references' convention: stylegan3-editing's W2S (golden), StyleCLIP/HyperStyle's for StyleGAN2
(the golden rosinality generator), rendering from S, S statistics, S files."""

from __future__ import annotations

import copy
import json
import math
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sgtool.editing import stylespace
from sgtool.editing.styleclip import load_s_stats
from sgtool.errors import SgtoolError
from sgtool.models import load_generator
from support.golden import golden_dir

_CACHE: dict = {}


def _generator(*parts):
    if parts not in _CACHE:
        _CACHE[parts] = load_generator(golden_dir(*parts))
    return _CACHE[parts]


@pytest.fixture
def sg3():
    io = dict(np.load(golden_dir("styleclip", "sg3t_64_styleclip_io.npz")))
    meta = json.loads(golden_dir("styleclip", "sg3t_64_styleclip.json").read_text())
    return _generator("generators", "sg3t_64.pkl"), io, meta


@pytest.fixture
def rosinality():
    folder = golden_dir("sg2", "rosinality_64")
    state = torch.load(folder / "stylegan2_64.pt", map_location="cpu", weights_only=True)["g_ema"]
    return _generator("sg2", "rosinality_64", "stylegan2_64.pt"), state, dict(np.load(folder / "io.npz"))


def test_s_is_stylegan3_editings_w2s(sg3):
    G, io, meta = sg3
    styles = stylespace.w_to_s(G, torch.from_numpy(io["ws"]))
    assert [(name, values.shape[1]) for name, values in styles.items()] == list(meta["layers"].items())
    for name, values in styles.items():
        np.testing.assert_allclose(values.numpy(), io[f"s/{name}"], atol=1e-5, rtol=0)
    # The input layer is normalised by its rotation part; the to-RGB layer carries its weight gain.
    torch.testing.assert_close(styles["input"][:, :2].norm(dim=1), torch.ones(4))
    torgb = G.synthesis.layer_names[-1]
    raw = getattr(G.synthesis, torgb).affine(torch.from_numpy(io["ws"][:, -1]))
    torch.testing.assert_close(styles[torgb], raw / math.sqrt(meta["layers"][torgb]), atol=1e-6, rtol=1e-6)


def test_render_from_s_matches_the_reference_also_with_a_transform(sg3):
    G, io, _ = sg3
    ws = torch.from_numpy(io["ws"])
    styles = stylespace.w_to_s(G, ws)
    np.testing.assert_allclose(stylespace.render_s(G, styles).numpy(), io["img_s"], atol=2e-4, rtol=0)
    np.testing.assert_allclose(stylespace.render_s(G, styles, transform=io["transform"]).numpy(),
                               io["img_s_transformed"], atol=2e-4, rtol=0)
    np.testing.assert_allclose(G.synthesis(ws).numpy(), io["img_w"], atol=2e-4, rtol=0)


@pytest.mark.parametrize("parts", [("generators", "sg3t_64.pkl"), ("generators", "sg3r_64.pkl"),
                                   ("generators", "sg2_64.pkl"), ("sg2", "rosinality_64", "stylegan2_64.pt")])
def test_s_of_w_plus_renders_exactly_the_w_plus_image(parts):
    G = _generator(*parts)
    ws = G.mapping(torch.from_numpy(np.random.RandomState(3).randn(2, G.z_dim).astype(np.float32)), None)
    with torch.no_grad():
        assert torch.equal(stylespace.render_s(G, stylespace.w_to_s(G, ws)), G.synthesis(ws, noise_mode="const"))
    styles, images = stylespace.capture_styles(G, ws)
    assert torch.equal(images, G.synthesis(ws, noise_mode="const"))
    assert [s.shape[1] for s in styles] == [layer.channels for layer in stylespace.style_layers(G)]


def test_an_edited_input_rotation_is_used_as_given(sg3):
    # stylegan3-editing feeds S["input"] to the Fourier features without normalising it again.
    G, io, _ = sg3
    styles = stylespace.w_to_s(G, torch.from_numpy(io["ws"][:1]))
    scaled = dict(styles, input=styles["input"] * torch.tensor([1.5, 1.5, 1.0, 1.0]))
    assert (stylespace.render_s(G, scaled) - stylespace.render_s(G, styles)).abs().max() > 1e-2


def _rosinality_styles(state, wplus):
    """HyperStyle's style vector, computed from the rosinality weights alone: each modulation is
    EqualLinear(style_dim, in_channels) = w @ (W / sqrt(style_dim)).T + b, in the order conv1, to_rgb1,
    then convs[2k], convs[2k+1], to_rgbs[k] reading latent 1+2k, 2+2k, 3+2k."""
    def modulation(prefix, w):
        weight = state[f"{prefix}.conv.modulation.weight"]
        return F.linear(w, weight / math.sqrt(weight.shape[1]), state[f"{prefix}.conv.modulation.bias"])

    styles = [modulation("conv1", wplus[:, 0]), modulation("to_rgb1", wplus[:, 1])]
    for k in range(len({key.split(".")[1] for key in state if key.startswith("to_rgbs.")})):
        styles += [modulation(f"convs.{2 * k}", wplus[:, 1 + 2 * k]),
                   modulation(f"convs.{2 * k + 1}", wplus[:, 2 + 2 * k]),
                   modulation(f"to_rgbs.{k}", wplus[:, 3 + 2 * k])]
    return styles


def test_stylegan2_s_is_hyperstyles_style_vector_on_the_rosinality_generator(rosinality):
    G, state, io = rosinality
    wplus = torch.from_numpy(io["wplus"])
    styles = stylespace.w_to_s(G, wplus)
    expected = _rosinality_styles(state, wplus)
    assert [v.shape[1] for v in styles.values()] == [v.shape[1] for v in expected]
    assert list(styles)[:5] == ["b4.conv1", "b4.torgb", "b8.conv0", "b8.conv1", "b8.torgb"]
    for ours, theirs in zip(styles.values(), expected):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(stylespace.render_s(G, styles).numpy(), io["img_wplus"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("parts", [("sg2", "rosinality_64", "stylegan2_64.pt"), ("generators", "sg3t_64.pkl")])
def test_a_to_rgb_s_step_is_the_references_unit(parts):
    # StyleGAN2's S is the raw modulation output (StyleCLIP, HyperStyle); StyleGAN3's to-RGB S carries the weight
    # gain (stylegan3-editing). Moving S by d must equal moving the affine's output by d (resp. d / gain).
    G = _generator(*parts)
    ws = G.mapping(torch.from_numpy(np.random.RandomState(4).randn(2, G.z_dim).astype(np.float32)), None)
    layer = [layer for layer in stylespace.style_layers(G) if layer.is_torgb][-1]
    styles = stylespace.w_to_s(G, ws)
    step = 0.75
    moved = styles[layer.name] + torch.eye(layer.channels)[2] * step
    edited = stylespace.render_s(G, {**styles, layer.name: moved})
    gain = 1.0 if G.kind == "stylegan2" else 1 / math.sqrt(layer.channels)
    shifted = copy.deepcopy(G)
    affine = stylespace.style_layers(shifted)[layer.index].module
    with torch.no_grad():
        affine.bias[2] += step / gain / affine.bias_gain
        expected = shifted.synthesis(ws, noise_mode="const")
    torch.testing.assert_close(edited, expected, atol=2e-5, rtol=0)
    assert (edited - G.synthesis(ws, noise_mode="const")).abs().max() > 1e-3


def test_s_statistics_follow_the_references_recipe(sg3):
    G, io, meta = sg3
    stats = stylespace.s_statistics(G, meta["samples"], seed=meta["seed"], chunk=700)
    golden_pose = load_s_stats(golden_dir("styleclip", "s_stats")).pose
    assert set(stats.pose) == {"theta", "x", "y"}
    for key in ("theta", "x", "y"):
        assert stats.pose[key] == pytest.approx(golden_pose[key], abs=1e-5)
    for name in stats.mean:
        np.testing.assert_allclose(stats.mean[name], io[f"s_mean/{name}"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(stats.std[name], io[f"s_std/{name}"], atol=1e-5, rtol=0)
    stds = stylespace.style_std(G, meta["samples"], meta["seed"])
    np.testing.assert_allclose(stds[5].numpy(), io[f"s_std/{list(stats.std)[5]}"], atol=1e-5, rtol=0)


def test_s_files_round_trip_and_old_files_are_refused(sg3, tmp_path):
    G, io, _ = sg3
    styles = stylespace.w_to_s(G, torch.from_numpy(io["ws"][:2]))
    path = stylespace.save_s(tmp_path / "a_s.npz", G, styles)
    loaded = stylespace.load_s(path, G)
    assert all(torch.equal(loaded[name], styles[name]) for name in styles)
    with pytest.raises(SgtoolError, match="stylegan3-editing W2S.*uses 'StyleCLIP W2S'"):
        stylespace.load_s(path, _generator("generators", "sg2_64.pkl"))

    # What sgtool wrote before: "NN_name" keys holding raw affine outputs.
    old = tmp_path / "old_styles.npz"
    np.savez(old, **{f"{i:02d}_{name}": v[0].numpy() for i, (name, v) in enumerate(styles.items())})
    with pytest.raises(SgtoolError, match="older sgtool.*edit the latent again"):
        stylespace.load_s(old)

    # stylegan3-editing's pickled S (dict layer -> [N, C]) loads without running code.
    reference = tmp_path / "S"
    reference.write_bytes(pickle.dumps({name: v.numpy() for name, v in styles.items()}))
    assert torch.equal(stylespace.load_s(reference, G)["L3_36_16"], styles["L3_36_16"])
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    reference.write_bytes(pickle.dumps({"input": Payload()}))
    with pytest.raises(SgtoolError, match="refusing to load .*system"):
        stylespace.load_s(reference)
    assert not marker.exists()


def test_bad_s_is_named(sg3):
    G, io, _ = sg3
    styles = stylespace.w_to_s(G, torch.from_numpy(io["ws"][:1]))
    with pytest.raises(SgtoolError, match="missing L0_36_16"):
        stylespace.render_s(G, {k: v for k, v in styles.items() if k != "L0_36_16"})
    with pytest.raises(SgtoolError, match=r"L2_36_16 needs shape \[1, 16\]"):
        stylespace.render_s(G, dict(styles, L2_36_16=torch.zeros(1, 3)))
    with pytest.raises(SgtoolError, match="StyleGAN3 network"):
        stylespace.render_s(_generator("generators", "sg2_64.pkl"),
                            stylespace.w_to_s(_generator("generators", "sg2_64.pkl"),
                                              torch.zeros(1, 10, 32)), transform=np.eye(3))
