"""StyleGAN2 family: rosinality-layout generators and the e4e / pSp encoders against the reference outputs
in ../shared/golden/sg2 (tolerances from its README), plus the released 1024 key layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sgtool.errors import CheckpointError
from sgtool.models import describe_generator, load_generator
from sgtool.models.rosinality import export_rosinality, generator_kwargs, name_pairs, to_nvidia_state

from support.golden import golden_dir

ATOL = 1e-4  # README: generator and encoder outputs atol 1e-4 (rtol 1e-4)


def close(actual, expected, atol=ATOL, rtol=1e-4):
    expected = torch.as_tensor(np.asarray(expected))
    actual = actual.detach().to(expected.dtype)
    assert actual.shape == expected.shape
    err = (actual - expected).abs().max().item()
    assert torch.allclose(actual, expected, atol=atol, rtol=rtol), f"max abs error {err}"
    return err


@pytest.fixture(scope="module")
def rosinality():
    folder = golden_dir("sg2", "rosinality_64")
    io = {k: torch.from_numpy(v) for k, v in np.load(folder / "io.npz").items()}
    return load_generator(folder / "stylegan2_64.pt"), io, folder


def test_rosinality_file_loads_as_one_network_with_its_layout(rosinality):
    G, io, folder = rosinality
    facts = describe_generator(G)
    assert facts["layout"] == "rosinality" and facts["kind"] == "stylegan2"
    assert (G.num_ws, G.z_dim, G.w_dim, G.img_resolution, G.mapping.num_layers) == (10, 512, 512, 64, 8)
    # channel_multiplier=1: 512 up to 32 px, 256 at 64 px
    assert G.synthesis.b32.conv1.weight.shape[0] == 512 and G.synthesis.b64.conv1.weight.shape[0] == 256
    raw = torch.load(folder / "stylegan2_64.pt", map_location="cpu", weights_only=True)
    assert not raw["g_ema"]["convs.0.conv.weight"].is_contiguous()  # the fixture's strided storage
    for i in range(9):  # noise_0 -> b4.conv1, noise_{2k+1}/{2k+2} -> conv0/conv1 of block 2**(k+3)
        res, conv = (4, "conv1") if i == 0 else (2 ** ((i + 1) // 2 + 2), "conv0" if i % 2 else "conv1")
        assert torch.equal(getattr(getattr(G.synthesis, f"b{res}"), conv).noise_const, io[f"noise_{i}"][0, 0])
    assert torch.equal(G.mapping.w_avg, io["mean_latent"][0])


def test_rosinality_mapping_truncation_and_renders_match_reference(rosinality):
    G, io, _ = rosinality
    with torch.no_grad():
        ws = G.mapping(io["z"], None)
        close(ws[:, 0], io["w"], atol=1e-5)
        close(ws, io["latent_z"], atol=1e-5)
        close(G.synthesis(ws, noise_mode="const"), io["img_z"])
        ws_trunc = G.mapping(io["z"], None, truncation_psi=0.7)
        close(ws_trunc[:, 0], io["w_trunc"], atol=1e-5)
        close(ws_trunc, io["latent_z_trunc"], atol=1e-5)
        close(G.synthesis(ws_trunc, noise_mode="const"), io["img_z_trunc"])
        # 20 codes through 8 layers: 1.2e-5 apart on some CPUs, within the golden README's suggested 1e-4
        close(G.mapping(io["z_wplus_source"], None)[:, 0].reshape(2, 10, 512), io["wplus"], atol=1e-4)
        close(G.synthesis(io["wplus"], noise_mode="const"), io["img_wplus"])
        mix = torch.cat([io["mix_w_a"][:, None].expand(-1, 4, -1), io["mix_w_b"][:, None].expand(-1, 6, -1)], 1)
        close(mix, io["latent_mix"], atol=0)
        image = G.synthesis(mix, noise_mode="const")
    close(image, io["img_mix"])
    assert image.abs().max() > 1  # random weights: a real signal, not a blank picture


def test_rosinality_export_is_the_inverse_mapping(rosinality):
    G, _, folder = rosinality
    exported, notes = export_rosinality(G)
    raw = torch.load(folder / "stylegan2_64.pt", map_location="cpu", weights_only=True)
    assert set(exported["g_ema"]) == set(raw["g_ema"])
    for key, value in raw["g_ema"].items():
        assert exported["g_ema"][key].is_contiguous()
        assert torch.equal(exported["g_ema"][key], value), key
    assert torch.equal(exported["latent_avg"], raw["latent_avg"])
    assert notes == []  # rosinality-born: nothing lost


def test_broken_rosinality_files_give_one_clear_error(tmp_path, rosinality):
    _, _, folder = rosinality
    raw = torch.load(folder / "stylegan2_64.pt", map_location="cpu", weights_only=True)
    partial = dict(raw["g_ema"])
    del partial["convs.3.activate.bias"]
    path = tmp_path / "partial.pt"
    torch.save({"g_ema": partial, "latent_avg": raw["latent_avg"]}, path)
    with pytest.raises(CheckpointError, match=r"partial\.pt is not a complete rosinality-layout.*convs\.3\.activate"):
        load_generator(path)
    odd = dict(raw["g_ema"], **{"convs.0.conv.blur.kernel": torch.ones(4, 4)})
    torch.save({"g_ema": odd}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="blur kernel"):
        load_generator(tmp_path / "odd.pt")


def test_rosinality_without_latent_avg_estimates_it_like_mean_latent(tmp_path, rosinality):
    G, io, folder = rosinality
    raw = torch.load(folder / "stylegan2_64.pt", map_location="cpu", weights_only=True)
    torch.save({"g_ema": raw["g_ema"]}, tmp_path / "train_ckpt.pt")
    estimated = load_generator(tmp_path / "train_ckpt.pt")
    # Another 4096-sample mean of the same mapping: close to the reference mean_latent(4096), not equal.
    diff = (estimated.mapping.w_avg - io["mean_latent"][0]).abs()
    assert 0 < diff.max() < 0.2 * io["mean_latent"].abs().max()


# ----------------------------------------------------------------------------------------------------------
# Released 1024 layouts (shapes only, built on the meta device)


@pytest.fixture(scope="module")
def layouts():
    return json.loads((golden_dir("sg2") / "layouts_official_1024.json").read_text())


def _meta_state(shapes: dict, prefix: str = "") -> dict:
    """Shape-only tensors, except the small blur kernels, which the loader checks by value."""
    taps = torch.tensor([1.0, 3, 3, 1])
    kernel = torch.outer(taps, taps) / 16 * 4
    cut = len(prefix)
    return {k[cut:]: kernel if k.endswith("kernel") else torch.empty(v, device="meta")
            for k, v in shapes.items() if k.startswith(prefix)}


def _meta_generator(state: dict):
    from sgtool.models import build_generator

    with torch.device("meta"):
        return build_generator("stylegan2", generator_kwargs(state))


def test_official_rosinality_1024_layout_maps_onto_config_f(layouts):
    layout = layouts["rosinality_1024_config_f"]
    assert layout["top_level"] == ["g_ema", "latent_avg"]
    state = _meta_state(layout["g_ema"])
    ours, kwargs = to_nvidia_state(state, torch.empty(512, device="meta"))
    assert kwargs["channel_base"] == 32768 and kwargs["img_resolution"] == 1024  # config-f
    G = _meta_generator(state)
    expected = {k: tuple(v.shape) for k, v in G.state_dict().items() if not k.endswith("resample_filter")}
    assert {k: tuple(v.shape) for k, v in ours.items()} == expected
    derived = {k for k in state if k.endswith("kernel")}
    assert {ros for ros, _ in name_pairs(8, [2 ** r for r in range(3, 11)])} | derived == set(state)


@pytest.mark.parametrize("name,cls", [("e4e_ffhq_1024", "Encoder4Editing"), ("psp_ffhq_1024", "GradualStyleEncoder")])
def test_official_encoder_layouts_match_our_modules(layouts, name, cls):
    from sgtool.models.encoders.sg2_encoders import SG2_ENCODERS

    shapes = layouts[name]["state_dict"]
    with torch.device("meta"):
        encoder = SG2_ENCODERS[cls][1](18)
    ours = {f"encoder.{k}": list(v.shape) for k, v in encoder.state_dict().items()}
    assert ours == {k: v for k, v in shapes.items() if k.startswith("encoder.")}
    decoder = _meta_state(shapes, "decoder.")
    assert _meta_generator(decoder).num_ws == 18


def test_official_hyperstyle_layout_incl_aliases_matches(layouts):
    from sgtool.models.encoders.hyperstyle import SharedWeightsHyperNetResNet, generator_layers

    shapes = layouts["hyperstyle_ffhq_1024_default_layers"]["state_dict"]
    G = _meta_generator(_meta_state(shapes, "decoder."))
    layers = generator_layers(G)
    assert len(layers) == 26
    tuned = [int(i) for i in "0,2,3,5,6,8,9,11,12,14,15,17,18,20,21,23,24".split(",")]
    layer_shapes = {i: (*layers[i][0].weight.shape[:2], layers[i][0].weight.shape[-1]) for i in tuned}
    with torch.device("meta"):
        hypernet = SharedWeightsHyperNetResNet(layer_shapes, tuned, len(layers))
    ours = {f"hypernet.{k}": list(v.shape) for k, v in hypernet.state_dict().items()}
    assert ours == {k: v for k, v in shapes.items() if k.startswith("hypernet.")}
    assert "hypernet.refinement_blocks.12.hypernet.w2" in ours  # the aliased shared weights


# ----------------------------------------------------------------------------------------------------------
# e4e and pSp encoders (one load and one forward pass per fixture)


@pytest.fixture(scope="module", params=["e4e", "psp"])
def encoder_run(request):
    from sgtool.pipelines.invert import load_encoder

    folder = golden_dir("sg2", f"{request.param}_64")
    io = {k: torch.from_numpy(v) for k, v in np.load(folder / "io.npz").items()}
    inverter = load_encoder(folder / f"{request.param}_64.pt")
    steps = inverter.invert(io["x"], keep_full=True)
    return request.param, inverter, steps, io


def test_encoder_type_comes_from_opts(encoder_run):
    name, inverter, steps, _ = encoder_run
    assert inverter.family == name
    assert inverter.encoder_type == {"e4e": "Encoder4Editing", "psp": "GradualStyleEncoder"}[name]
    assert len(steps) == 1 and inverter.generator.layout == "rosinality"


def test_encoder_codes_and_images_match_reference(encoder_run):
    _, inverter, steps, io = encoder_run
    close(inverter.latent_avg, io["latent_avg"], atol=0)
    close(steps[0].latents - inverter.latent_avg, io["codes_raw"])
    close(steps[0].latents, io["codes"])
    close(steps[0].images, io["images"])  # AdaptiveAvgPool2d(256) of the 64 px render
    close(steps[0].images_full, io["images_native"])


def test_encoder_renders_through_another_generator(tmp_path):
    from sgtool.pipelines.convert import convert_generator
    from sgtool.pipelines.invert import load_encoder

    folder = golden_dir("sg2", "e4e_64")
    io = np.load(folder / "io.npz")
    with pytest.raises(CheckpointError, match="does not fit the encoder"):
        load_encoder(folder / "e4e_64.pt", network="tiny-stylegan2")
    convert_generator(folder / "e4e_64.pt", tmp_path / "decoder.pkl", verify=False)  # its decoder, as a pickle
    other = load_encoder(folder / "e4e_64.pt", network=str(tmp_path / "decoder.pkl"))
    assert other.generator.layout == "nvidia-pkl"
    with torch.no_grad():
        close(other.generator.synthesis(torch.from_numpy(io["codes"]), noise_mode="const"), io["images_native"])


# ----------------------------------------------------------------------------------------------------------
# ReStyle trained on StyleGAN2: the StyleGAN3 release's encoder layout over a rosinality decoder


def _pseudo_random_like(name: str, shape, gen: torch.Generator) -> torch.Tensor:
    """Random weights for a checkpoint built in the test; big ones as strided views of a small buffer
    (a small file, and non-contiguous like the golden checkpoints)."""
    if name.endswith("num_batches_tracked"):
        return torch.tensor(1)
    if name.endswith("running_var"):
        return torch.ones(shape)
    if len(shape) == 1:
        return (1.0 if name.endswith("weight") else 0.0) + 0.05 * torch.randn(shape, generator=gen)
    fan_in = int(np.prod(shape[1:]))
    scale = 0.3 if name.endswith("linear.weight") else (1.0 / fan_in) ** 0.5
    strides = [[13, 7, 3][d % 3] for d in range(len(shape) - 1)] + [1]
    size = sum((n - 1) * st for n, st in zip(shape, strides)) + 1
    return (torch.randn(size, generator=gen) * scale).as_strided(shape, strides)


def test_restyle_for_stylegan2_runs_its_iterations_over_the_rosinality_decoder(tmp_path):
    from sgtool.models.encoders.restyle import ResNetProgressiveBackboneEncoder
    from sgtool.models.encoders import face_pool
    from sgtool.pipelines.invert import load_encoder

    e4e_folder = golden_dir("sg2", "e4e_64")
    e4e = torch.load(e4e_folder / "e4e_64.pt", map_location="cpu", weights_only=True)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in ResNetProgressiveBackboneEncoder(n_styles=10).state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    state = {f"encoder.{k}": _pseudo_random_like(k, shape, gen) for k, shape in shapes.items()}
    state.update({k: v for k, v in e4e["state_dict"].items() if k.startswith("decoder.")})
    opts = {"encoder_type": "ResNetProgressiveBackboneEncoder", "input_nc": 6, "output_size": 64,
            "n_iters_per_batch": 2}
    torch.save({"state_dict": state, "opts": opts, "latent_avg": e4e["latent_avg"]}, tmp_path / "restyle_sg2.pt")

    inverter = load_encoder(tmp_path / "restyle_sg2.pt")
    # restyle-encoder's inference runs 5 iterations whatever the checkpoint's n_iters_per_batch (2 here).
    assert (inverter.family, inverter.generator.layout, inverter.default_steps) == ("e4e", "rosinality", 5)
    x = torch.from_numpy(np.load(e4e_folder / "io.npz")["x"][:1])
    steps = inverter.invert(x)
    G, avg = inverter.generator, e4e["latent_avg"][0]
    with torch.no_grad():  # ReStyle: start from the average image, add each step's residual to the last code
        previous, codes = face_pool(G.synthesis(avg.expand(1, 10, 512), noise_mode="const")), avg.expand(1, 10, 512)
        for step in steps:
            codes = inverter.encoder(torch.cat([x, previous], dim=1)) + codes
            previous = face_pool(G.synthesis(codes, noise_mode="const"))
            close(step.latents, codes)
            close(step.images, previous)
    assert (steps[1].latents - steps[0].latents).abs().max() > 1e-3
