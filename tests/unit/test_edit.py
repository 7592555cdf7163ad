"""Editing maths on the golden generators: W/W+ edits, StyleSpace, SeFa, boundary training."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from sgtool.editing import (
    DirectionRegistry,
    Edit,
    apply_edits,
    apply_style_edits,
    capture_styles,
    load_direction,
    parse_edit,
    parse_style,
    parse_sweep,
    render_styles,
    resolve_direction,
    resolve_style_edit,
    sefa_directions,
    style_layers,
    train_boundary,
)
from sgtool.editing.sefa import sefa_layers
from sgtool.errors import SgtoolError
from sgtool.models import builtin_model_warning, load_generator
from sgtool.pipelines.edit import (EditOptions, EditPlan, EditSettings, plan_edit, prepare_edits,
                                  random_weights_warning, run_edit)
from sgtool.pipelines.mix import plan_mix
from sgtool.pipelines.shared.render import render
from sgtool.settings import BoundarySettings, MixSettings, SefaSettings
from sgtool.utils.batch import Shard

_CACHE: dict = {}


@pytest.fixture
def golden(golden_generator_files):
    def get(name):
        if name not in _CACHE:
            pkl, meta, io, _ = golden_generator_files(name)
            _CACHE[name] = (load_generator(pkl), torch.from_numpy(io["ws"][:2]))
        return _CACHE[name]

    return get


@pytest.mark.parametrize("name", ["sg3t_64", "sg2_64"])
def test_zero_strength_renders_the_input_exactly(golden, name):
    G, ws = golden(name)
    edits = [Edit("a", 0.0, np.random.RandomState(0).randn(1, G.w_dim).astype(np.float32))]
    edited = apply_edits(ws, edits)
    assert torch.equal(edited, ws)
    assert torch.equal(render(G, edited), G.synthesis(ws, noise_mode="const"))


@pytest.mark.parametrize("name", ["sg3t_64", "sg2_64"])
def test_w_edit_equals_synthesis_of_w_plus_sd_on_chosen_layers_only(golden, name):
    G, ws = golden(name)
    d = np.random.RandomState(1).randn(G.w_dim).astype(np.float32)
    layers = [0, 1, 2, 3, 4, 5]
    edited = apply_edits(ws, [Edit("d", 1.5, d[None])], layers=layers)
    expected = ws.clone()
    expected[:, :6] = ws[:, :6] + 1.5 * torch.from_numpy(d)
    assert torch.equal(edited, expected)
    assert torch.equal(edited[:, 6:], ws[:, 6:])  # layers outside the selection are untouched
    assert torch.equal(render(G, edited), G.synthesis(expected, noise_mode="const"))
    assert not torch.equal(render(G, edited), render(G, ws))


def test_edits_combine_additively_and_w_plus_directions(golden):
    G, ws = golden("sg3t_64")
    rng = np.random.RandomState(2)
    da = rng.randn(1, G.w_dim).astype(np.float32)
    dplus = rng.randn(G.num_ws, G.w_dim).astype(np.float32)
    both = apply_edits(ws, [Edit("a", 2.0, da), Edit("b", -0.5, dplus)])
    manual = ws + 2.0 * torch.from_numpy(da) - 0.5 * torch.from_numpy(dplus)
    torch.testing.assert_close(both, manual, atol=1e-6, rtol=0)
    single = apply_edits(ws[0].numpy(), [Edit("b", -0.5, dplus)], layers=[3])  # numpy in, numpy out
    assert isinstance(single, np.ndarray)
    np.testing.assert_array_equal(single[3], ws[0, 3].numpy() - 0.5 * dplus[3])
    np.testing.assert_array_equal(np.delete(single, 3, 0), np.delete(ws[0].numpy(), 3, 0))
    with pytest.raises(SgtoolError, match="--mode w needs a W direction"):
        apply_edits(ws, [Edit("b", 1.0, dplus)], mode="w")
    with pytest.raises(SgtoolError, match="--mode wplus needs"):
        apply_edits(ws, [Edit("a", 1.0, da)], mode="wplus")
    with pytest.raises(SgtoolError, match="out of range"):
        apply_edits(ws, [Edit("a", 1.0, da)], layers=[G.num_ws])


@pytest.mark.parametrize("name", ["sg3t_64", "sg3r_64", "sg2_64"])
def test_stylespace_round_trip_is_exact(golden, name):
    G, ws = golden(name)
    styles, images = capture_styles(G, ws)
    reference = G.synthesis(ws, noise_mode="const")
    assert torch.equal(images, reference)
    assert [s.shape[1] for s in styles] == [layer.channels for layer in style_layers(G)]
    zero = apply_style_edits(styles, [resolve_style_edit(parse_style("3:1=0"), style_layers(G))])
    assert torch.equal(render_styles(G, zero), reference)


@pytest.mark.parametrize("name", ["sg3t_64", "sg2_64"])
def test_style_edit_moves_exactly_one_channel(golden, name):
    G, ws = golden(name)
    layers = style_layers(G)
    target = layers[2]
    styles, _ = capture_styles(G, ws)
    edit = resolve_style_edit(parse_style(f"{target.name}:3=+0.75"), layers)
    assert edit.index == 2
    edited = render_styles(G, apply_style_edits(styles, [edit]))
    # Same thing done to the model instead: shift that channel's affine bias.
    shifted = copy.deepcopy(G)
    affine = style_layers(shifted)[2].module
    with torch.no_grad():
        affine.bias[3] += 0.75 / affine.bias_gain
    torch.testing.assert_close(edited, shifted.synthesis(ws, noise_mode="const"), atol=2e-5, rtol=0)
    assert (edited - G.synthesis(ws, noise_mode="const")).abs().max() > 1e-3


def test_stylegan2_style_layers_read_the_right_style_input(golden):
    G, ws = golden("sg2_64")
    # Sample 0 is the base; sample k+1 moves style input k only. One forward pass for all.
    batch = ws[:1].repeat(G.num_ws + 1, 1, 1)
    for k in range(G.num_ws):
        batch[k + 1, k] += 1.0
    styles, _ = capture_styles(G, batch)
    for k in range(G.num_ws):
        # (rows of one batched matmul may differ in the last bit, hence a tolerance)
        changed = {layer.index for layer in style_layers(G)
                   if (styles[layer.index][k + 1] - styles[layer.index][0]).abs().max() > 1e-4}
        assert changed == {layer.index for layer in style_layers(G) if layer.w_index == k}


@pytest.mark.parametrize("name", ["sg3r_64", "sg2_64"])
def test_sefa_matches_numpy_eigendecomposition(golden, name):
    G, _ = golden(name)
    directions, eigenvalues, names = sefa_directions(G, top=6)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0, atol=1e-6)
    assert np.all(np.diff(eigenvalues) <= 1e-9)
    # Independent computation: numpy's general eig of the normalised weights' Gram matrix.
    modules = dict(G.named_modules())
    weights = []
    for module_name in names:
        weights.append(modules[f"synthesis.{module_name}.affine"].weight.detach().numpy().astype(np.float64))
    a = np.concatenate(weights, axis=0)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    values, vectors = np.linalg.eig(a.T @ a)
    order = np.argsort(-values.real)[:6]
    np.testing.assert_allclose(eigenvalues, values.real[order], rtol=1e-6)
    cosines = np.abs(np.sum(directions * vectors.real[:, order].T, axis=1))
    np.testing.assert_allclose(cosines, 1.0, atol=1e-5)
    assert all("torgb" not in n for n in names) and "input" not in names


def test_sefa_layer_selection(golden):
    G, _ = golden("sg3t_64")
    chosen = sefa_layers(G, [1, 2])
    assert [layer.w_index for layer in chosen] == [1, 2]
    full, _, _ = sefa_directions(G, top=3)
    part, _, _ = sefa_directions(G, layers=[1, 2], top=3)
    assert not np.allclose(np.abs(full), np.abs(part), atol=1e-3)
    with pytest.raises(SgtoolError, match="selects no convolution style layer"):
        sefa_layers(G, [0])


def test_boundary_recovers_a_planted_direction():
    rng = np.random.RandomState(0)
    planted = rng.randn(32)
    planted /= np.linalg.norm(planted)
    latents = rng.randn(3000, 32)
    scores = latents @ planted + 0.05 * rng.randn(3000)
    result = train_boundary(latents, scores, ratio=0.1, split=0.7, seed=0)
    assert float(result.normal @ planted) > 0.95  # also the sign: moving along it raises the score
    assert abs(np.linalg.norm(result.normal) - 1) < 1e-6
    assert result.val_accuracy is not None and result.val_accuracy > 0.95
    assert (result.train_per_class, result.val_per_class) == (210, 90)
    with pytest.raises(SgtoolError, match="training samples per class"):
        train_boundary(latents[:10], scores[:10], ratio=0.02)


def test_parsers():
    assert (parse_edit("age=+2").name, parse_edit("age=+2").strength) == ("age", 2.0)
    assert parse_edit("smile=-1.5").label == "smile-1.5"
    assert Edit("age", 2.0).label == "age+2"
    name, strengths = parse_sweep("age=-4:4:9")
    assert name == "age" and np.allclose(strengths, np.arange(-4, 5))
    for bad in ("age", "age=+x", "=2", "a b=1"):
        with pytest.raises(SgtoolError):
            parse_edit(bad)
    for bad in ("age=-4:4", "age=1:2:1", "age=a:b:3"):
        with pytest.raises(SgtoolError, match="--sweep"):
            parse_sweep(bad)
    style = parse_style("L3_36_32:12=+5")
    assert (style.layer, style.channel, style.strength) == ("L3_36_32", 12, 5.0)
    with pytest.raises(SgtoolError, match="LAYER:CHANNEL=STRENGTH"):
        parse_style("3=+5")


def test_registry_and_direction_files(golden, tmp_path):
    G, _ = golden("sg3r_64")
    sets = {"stylegan3-ffhq": {"files": {"age": "ffhq/age_boundary.npy"}},
            "stylegan3-ffhqu": {"source": "somewhere", "files": {"age": "ffhqu/age_boundary.npy", "smile": "x.npy"}},
            "stylegan2-ffhq": {"files": {"age": "sg2/age.pt"}}}
    registry = DirectionRegistry(sets, folder=tmp_path)
    assert registry.set_for(G, "stylegan3-r-ffhqu-1024x1024.pkl") == "stylegan3-ffhqu"
    assert registry.set_for(G, "stylegan3-r-ffhq-1024x1024.pkl") == "stylegan3-ffhq"
    assert registry.set_for(golden("sg2_64")[0], "whatever.pkl") == "stylegan2-ffhq"
    (tmp_path / "ffhqu").mkdir()
    d = np.random.RandomState(3).randn(1, 32).astype(np.float32)
    np.save(tmp_path / "ffhqu" / "age_boundary.npy", d)
    direction, path = resolve_direction("age", G, registry, hint="stylegan3-r-ffhqu-1024x1024.pkl")
    np.testing.assert_array_equal(direction, d)
    with pytest.raises(SgtoolError, match=r"unknown direction 'pose' for stylegan3-ffhqu; known: age, mine, smile"):
        resolve_direction("pose", G, registry, extra={"mine": tmp_path / "m.npy"}, hint="ffhqu")
    with pytest.raises(SgtoolError, match=r"needs .*x\.npy: put the file there \(from somewhere\)"):
        resolve_direction("smile", G, registry, hint="ffhqu")
    # e4e-style torch directions load with weights_only; wrong widths are refused with the file named.
    torch.save(torch.from_numpy(d), tmp_path / "d.pt")
    np.testing.assert_array_equal(load_direction(tmp_path / "d.pt", 32, G.num_ws), d)
    np.save(tmp_path / "wide.npy", np.zeros(512, np.float32))
    with pytest.raises(SgtoolError, match="wide.npy has w_dim 512 but the generator's is 32"):
        load_direction(tmp_path / "wide.npy", 32, G.num_ws)
    np.save(tmp_path / "obj.npy", np.array({"a": 1}, dtype=object), allow_pickle=True)
    with pytest.raises(SgtoolError, match="expected a numeric array"):
        load_direction(tmp_path / "obj.npy", 32)


def test_registry_names_fall_back_to_the_model_cache(golden, tmp_path, monkeypatch):
    G, _ = golden("sg3r_64")
    monkeypatch.setenv("SGTOOL_HOME", str(tmp_path))
    monkeypatch.setenv("SGTOOL_OFFLINE", "1")  # never download in tests
    sets = {"stylegan3-ffhq": {"files": {"age": "ffhq/age_boundary.npy"}, "hub": {"age": "interfacegan-sg3-ffhq-age"}}}
    registry = DirectionRegistry(sets, folder=tmp_path / "directions")
    with pytest.raises(SgtoolError, match="offline"):
        resolve_direction("age", G, registry)
    d = np.random.RandomState(4).randn(1, 32).astype(np.float32)
    (tmp_path / "models").mkdir()
    np.save(tmp_path / "models" / "sg3-ffhq-age_boundary.npy", d)  # placed by hand, as the error says
    direction, path = resolve_direction("age", G, registry)
    np.testing.assert_array_equal(direction, d)
    assert path == tmp_path / "models" / "sg3-ffhq-age_boundary.npy"


def test_the_shipped_registry_file_and_settings_choose_the_set(golden, tmp_path):
    G, _ = golden("sg3r_64")
    registry = DirectionRegistry.from_settings(EditOptions(directions_dir=tmp_path))
    assert set(registry.sets) == {"stylegan3-ffhq", "stylegan3-ffhqu", "stylegan2-ffhq"}
    assert registry.sets["stylegan3-ffhq"]["hub"]["age"] == "interfacegan-sg3-ffhq-age"
    assert registry.folder == tmp_path
    assert registry.set_for(G, "stylegan3-r-ffhqu-1024x1024.pkl") == "stylegan3-ffhqu"
    forced = DirectionRegistry.from_settings(EditOptions(direction_set="stylegan2-ffhq"))
    assert forced.set_for(G, "stylegan3-r-ffhqu-1024x1024.pkl") == "stylegan2-ffhq"
    with pytest.raises(SgtoolError, match="direction_set 'nope' is not in the registry; known sets: stylegan3-ffhq"):
        DirectionRegistry.from_settings(EditOptions(direction_set="nope"))


def test_prepare_edits_resolves_and_checks_before_rendering(golden, tmp_path):
    G, ws = golden("sg2_64")
    d = np.random.RandomState(6).randn(1, G.w_dim).astype(np.float32)
    np.save(tmp_path / "d.npy", d)
    request = prepare_edits(G, EditOptions(edits=["d=+2"], directions=[f"d={tmp_path / 'd.npy'}"], layers="0-2"))
    assert request.layers == [0, 1, 2] and request.mode == "auto" and request.direction_set == "stylegan2-ffhq"
    np.testing.assert_array_equal(request.edits[0].direction, d)
    expected = ws.clone()
    expected[:, :3] += 2 * torch.from_numpy(d)
    assert torch.equal(request.apply(ws), expected)
    assert torch.equal(request.apply(ws, scale=0.0), ws)  # a ramp's first frame
    for options, message in ((EditOptions(edits=["d=1"], directions=[f"d={tmp_path / 'd.npy'}"], layers=[99]),
                              "out of range"),
                             (EditOptions(edits=["d=1"], directions=[f"d={tmp_path / 'd.npy'}"], mode="wplus"),
                              "--mode wplus needs"),
                             (EditOptions(edits=["nope=1"]), "unknown direction 'nope' for stylegan2-ffhq")):
        with pytest.raises(SgtoolError, match=message):
            prepare_edits(G, options)
    with pytest.raises(ValueError, match="names a direction twice"):
        EditOptions(edits=["d=1", "d=2"])


def test_plan_checks_usage_before_anything_loads(tmp_path):
    np.save(tmp_path / "a_latent.npy", np.zeros((4, 8), np.float32))
    latent = str(tmp_path / "a_latent.npy")
    plan = plan_edit([latent], EditSettings(network="G.pkl", edits=["age=+1"]))
    assert plan.task == "edit" and plan.latents == [tmp_path / "a_latent.npy"] and plan.transforms is None
    for latents, settings, shard, message in (
            ([latent], EditSettings(network="G.pkl", sweep="age=-1:1:3"), Shard(1, 2), "run sweeps without --shard"),
            ([latent], EditSettings(network="G.pkl"), None, "nothing to do.*`sgtool mix`.*`sgtool directions`"),
            ([latent], EditSettings(edits=["age=+1"]), None, "give --network: the generator the latents belong to"),
            ([], EditSettings(network="G.pkl", edits=["age=+1"]), None, "give the latent files to edit"),
            ([str(tmp_path)], EditSettings(network="G.pkl", edits=["age=+1"]), None, "is a directory"),
            ([latent], EditSettings(network="G.pkl", edits=["age=+1"], transforms=tmp_path / "none.json"), None,
             "transforms file .*none.json does not exist")):
        with pytest.raises(SgtoolError, match=message):
            plan_edit(latents, settings, shard)
    # --aligned ignores --transforms, so a missing transforms file does not matter then.
    assert plan_edit([latent], EditSettings(network="G.pkl", edits=["age=+1"], transforms=tmp_path / "none.json",
                                            aligned=True))


def test_the_command_warns_about_random_weight_test_generators(tmp_path):
    assert "TEST model: edits will not mean anything" in random_weights_warning(
        EditPlan("edit", EditSettings(network="tiny-stylegan3-t")))
    assert random_weights_warning(EditPlan("edit", EditSettings(network=str(tmp_path / "G.pkl")))) is None
    assert "the directions found" in builtin_model_warning("tiny-stylegan2", "the directions found")
    assert builtin_model_warning(tmp_path / "G.pkl", "the directions found") is None


def test_mix_and_direction_plans_check_usage_before_anything_loads(tmp_path):
    np.save(tmp_path / "a_latent.npy", np.zeros((4, 8), np.float32))
    latent = str(tmp_path / "a_latent.npy")
    assert plan_mix([], MixSettings(network="G.pkl", layers=[0], rows="0-1", cols="2")).latents == []
    for latents, settings, message in (
            ([latent, latent], MixSettings(layers=[0]), "give --network"),
            ([latent, latent], MixSettings(network="G.pkl"), "give --layers"),
            ([], MixSettings(network="G.pkl", layers=[0], rows="0-1"), "needs both --rows and --cols"),
            ([latent], MixSettings(network="G.pkl", layers=[0], rows="0", cols="1"), "not both"),
            ([latent], MixSettings(network="G.pkl", layers=[0]), "give two latent files")):
        with pytest.raises(SgtoolError, match=message):
            plan_mix(latents, settings)
    # Old keys of the settings that moved out of `sgtool edit` still load.
    assert MixSettings(mix_rows="0-2", preview_trunc=0.5).rows == "0-2"
    assert SefaSettings(sefa_preview="-2:2:3").preview == (-2.0, 2.0, 3)
    assert BoundarySettings(boundary_ratio=0.3, boundary_name="x").ratio == 0.3


def test_python_run_of_a_dict_file_names_entries_and_records_their_failures(golden, tmp_path):
    G, ws = golden("sg2_64")
    d = np.random.RandomState(7).randn(1, G.w_dim).astype(np.float32)
    np.save(tmp_path / "d.npy", d)
    np.save(tmp_path / "latents.npy", np.array({"x.jpg": [ws[0].numpy()], "sub/y.png": ws[1].numpy()}, dtype=object),
            allow_pickle=True)
    np.save(tmp_path / "x_latent.npy", ws[1].numpy())  # its output name collides with the dict's x.jpg
    bad = np.zeros((3, G.w_dim), np.float32)  # the wrong number of style inputs: the whole file is refused
    np.save(tmp_path / "other.npy", np.array({"z.jpg": bad}, dtype=object), allow_pickle=True)
    out = tmp_path / "out"
    settings = EditSettings(network="tiny-stylegan2", edits=["d=+1"], directions=[f"d={tmp_path / 'd.npy'}"],
                            outdir=out, device="cpu")
    files = [str(tmp_path / name) for name in ("x_latent.npy", "latents.npy", "other.npy")]
    summary = run_edit(plan_edit(files, settings), generator=G)
    assert summary["exit_code"] == 1
    single, table, other = summary["items"]
    assert (single["name"], single["status"], other["status"]) == ("x", "ok", "failed")
    assert "has shape [3, 32]" in other["error"]
    assert table["status"] == "failed" and [e["name"] for e in table["entries"]] == ["x", "sub_y"]
    assert "another input is also named 'x'" in table["entries"][0]["error"] and "x.jpg" in table["error"]
    assert table["outputs"] == [str(out / "sub_y_d+1.png"), str(out / "sub_y_d+1.npy")]
    expected = apply_edits(ws[1].numpy(), [Edit("d", 1.0, d)])
    np.testing.assert_allclose(np.load(out / "sub_y_d+1.npy"), expected, atol=1e-6)
    np.testing.assert_allclose(np.load(out / "x_d+1.npy"), expected, atol=1e-6)  # x_latent.npy's, not x.jpg's
    record = json.loads((out / "edits.json").read_text())
    assert [f["input"] for f in record["failed"]] == files[1:]
