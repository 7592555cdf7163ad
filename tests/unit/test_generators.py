"""Our generators against NVIDIA's official outputs (../shared/golden/generators)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from support.golden import GENERATOR_FIXTURES
from sgtool.geometry import input_transform
from sgtool.models import build_generator, generator_from_state_dict, load_generator, load_state, save_generator

WS_TOL = 1e-5
IMG_TOL = 1e-4


def kind_of(meta):
    return "stylegan3" if "stylegan3" in meta["class"] else "stylegan2"


def check_against_golden(G, io):
    t = {k: torch.from_numpy(v) for k, v in io.items()}
    with torch.no_grad():
        ws = G.mapping(t["z"], None, truncation_psi=float(io["truncation_psi"]))
        assert (ws - t["ws"]).abs().max() <= WS_TOL
        assert (G.synthesis(t["ws"], noise_mode="const") - t["img"]).abs().max() <= IMG_TOL
        ws1 = G.mapping(t["z"], None)
        assert (ws1 - t["ws_psi1"]).abs().max() <= WS_TOL
        assert (G.synthesis(ws1) - t["img_psi1"]).abs().max() <= IMG_TOL
        assert (G.mapping(t["z2"], None, truncation_psi=0.7) - t["ws2"]).abs().max() <= WS_TOL
        mixed = torch.where(t["mix_src"].bool()[None, :, None], t["ws2"], t["ws"])
        assert torch.equal(mixed, t["ws_mixed"])
        assert (G.synthesis(t["ws_mixed"]) - t["img_mixed"]).abs().max() <= IMG_TOL
        for key in io:
            if key.startswith("ws_cutoff"):
                cutoff = int(io["truncation_cutoff"])
                ws_cut = G.mapping(t["z"], None, truncation_psi=0.7, truncation_cutoff=cutoff)
                assert (ws_cut - t[key]).abs().max() <= WS_TOL
        if "transform" in io:
            img = G.synthesis(t["ws"], transform=t["transform"])
            assert (img - t["img_transformed"]).abs().max() <= IMG_TOL


@pytest.mark.parametrize("name", GENERATOR_FIXTURES)
def test_official_pickle_matches_reference(name, golden_generator_files):
    pkl, meta, io, _ = golden_generator_files(name)
    G = load_generator(pkl)
    assert G.kind == kind_of(meta)
    assert G.num_ws == meta["num_ws"]
    check_against_golden(G, io)


@pytest.mark.parametrize("name", GENERATOR_FIXTURES)
def test_state_npz_with_official_kwargs_matches_reference(name, golden_generator_files):
    _, meta, io, state = golden_generator_files(name)
    G = build_generator(kind_of(meta), meta["init_kwargs"]).eval()
    # strict: every official name present in ours and vice versa.
    assert set(G.state_dict()) == set(state)
    load_state(G, {k: torch.from_numpy(v) for k, v in state.items()}, name)
    check_against_golden(G, io)


@pytest.mark.parametrize("name", GENERATOR_FIXTURES)
def test_bare_state_dict_infers_architecture(name, golden_generator_files, tmp_path):
    """stylegan3-editing ships generators as bare NVIDIA-named state dicts (.pt)."""
    _, meta, io, state = golden_generator_files(name)
    path = tmp_path / f"{name}.pt"
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
    G = load_generator(path)
    for key, value in meta["init_kwargs"].items():
        if key in ("magnitude_ema_beta", "fused_modconv_default"):
            continue  # training-only settings that shapes cannot reveal
        assert G.init_kwargs[key] == value, key
    check_against_golden(G, io)


def test_inference_drops_batched_transform_buffer(golden_generator_files):
    _, _, io, state = golden_generator_files("sg3t_64")
    tensors = {k: torch.from_numpy(v) for k, v in state.items()}
    tensors["synthesis.input.transform"] = torch.eye(3).repeat(2, 1, 1)  # as encoder checkpoints store it
    G = generator_from_state_dict(tensors).eval()
    check_against_golden(G, io)


@pytest.mark.parametrize("name", GENERATOR_FIXTURES)
def test_own_format_round_trip(name, golden_generator_files, tmp_path):
    pkl, _, io, _ = golden_generator_files(name)
    G = load_generator(pkl)
    path = save_generator(G, tmp_path / "g.safetensors", metadata={"note": "round trip"})
    G2 = load_generator(path)
    assert G2.extra_metadata == {"note": "round trip"}
    ws = torch.from_numpy(io["ws"])
    with torch.no_grad():
        assert torch.equal(G.synthesis(ws), G2.synthesis(ws))
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_input_transform_buffer_and_override_agree(golden_generator_files):
    pkl, _, io, _ = golden_generator_files("sg3r_64")
    G = load_generator(pkl)
    ws = torch.from_numpy(io["ws"][:2])
    m = torch.from_numpy(input_transform((0.1, -0.05), 12.0)).float()
    with torch.no_grad():
        via_override = G.synthesis(ws, transform=m)
        via_batch = G.synthesis(ws, transform=m.expand(2, 3, 3))
        G.synthesis.input.transform.copy_(m)
        via_buffer = G.synthesis(ws)
    assert torch.equal(via_override, via_buffer)
    assert torch.equal(via_override, via_batch)


def test_golden_transform_is_gen_images_convention(golden_generator_files):
    _, _, io, _ = golden_generator_files("sg3t_64")
    expected = input_transform(io["transform_translate"], float(io["transform_angle_deg"]))
    np.testing.assert_allclose(expected, io["transform"], atol=1e-6)


@pytest.mark.parametrize("name", GENERATOR_FIXTURES)
def test_gradients_flow_to_latents_and_weights(name, golden_generator_files):
    pkl, _, io, _ = golden_generator_files(name)
    G = load_generator(pkl).requires_grad_(True)
    ws = torch.from_numpy(io["ws"][:1]).requires_grad_(True)
    G.synthesis(ws).square().mean().backward()
    assert torch.isfinite(ws.grad).all() and ws.grad.abs().sum() > 0
    trained = [p for p in G.synthesis.parameters() if p.grad is not None]
    assert trained and all(torch.isfinite(p.grad).all() for p in trained)


def test_conditional_and_wider_configs_build_and_render():
    for kind, kwargs in [
        ("stylegan3", dict(z_dim=8, c_dim=3, w_dim=16, img_resolution=32, img_channels=3, channel_base=256,
                           channel_max=8, conv_kernel=1, use_radial_filters=True, mapping_kwargs={"num_layers": 3})),
        ("stylegan2", dict(z_dim=8, c_dim=3, w_dim=16, img_resolution=32, img_channels=1, channel_base=256,
                           channel_max=8, architecture="resnet")),
        ("stylegan2", dict(z_dim=8, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, channel_base=256,
                           channel_max=8, architecture="orig")),
    ]:
        G = build_generator(kind, kwargs).eval()
        c = torch.eye(kwargs["c_dim"])[:2] if kwargs["c_dim"] else None
        with torch.no_grad():
            img = G(torch.randn(2, 8), c, truncation_psi=0.5, truncation_cutoff=2)
        assert img.shape == (2, kwargs["img_channels"], kwargs["img_resolution"], kwargs["img_resolution"])
        assert torch.isfinite(img).all()
        # Inference recovers the same architecture from the weights alone.
        G2 = generator_from_state_dict(G.state_dict())
        assert G2.init_kwargs["c_dim"] == kwargs["c_dim"]
        with torch.no_grad():
            assert torch.equal(G2.synthesis(G.mapping(torch.ones(1, 8), c[:1] if c is not None else None)),
                               G.synthesis(G.mapping(torch.ones(1, 8), c[:1] if c is not None else None)))
