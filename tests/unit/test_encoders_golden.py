"""ReStyle-pSp / ReStyle-e4e for StyleGAN3 against stylegan3-editing's outputs (../shared/golden/encoders)."""

from __future__ import annotations

import pathlib
import pickle

import numpy as np
import pytest
import torch

from support.golden import golden_dir
from sgtool.errors import CheckpointError
from sgtool.models.encoders import (
    RESTYLE_ENCODERS,
    ReStyleInverter,
    ResNetBackboneEncoder,
    ResNetProgressiveBackboneEncoder,
    read_encoder_checkpoint,
)
from sgtool.pipelines.invert import encoder_input, load_encoder

LATENT_TOL = 1e-4
IMAGE_TOL = 1e-3
# Inverting one sample keeps the test fast; each fixture uses a different one so both are covered.
SAMPLE = {"BackboneEncoder": 0, "ProgressiveBackboneEncoder": 1}


def fixture_files(name):
    folder = golden_dir("encoders")
    return folder / f"{name}_ckpt.pt", {k: torch.from_numpy(v) for k, v in np.load(folder / f"{name}_io.npz").items()}


@pytest.mark.parametrize("name", list(SAMPLE))
def test_restyle_reproduces_reference_steps(name):
    ckpt, io = fixture_files(name)
    enc = load_encoder(ckpt)
    assert isinstance(enc, ReStyleInverter)
    assert enc.family == RESTYLE_ENCODERS[name][0] and enc.default_steps == 3
    assert enc.generator.img_resolution == 512 and enc.generator.num_ws == 16
    assert torch.equal(enc.latent_avg, io["latent_avg"])
    # The checkpoint's batched transform buffer is dropped; the decoder keeps the identity.
    assert torch.equal(enc.generator.synthesis.input.transform, torch.eye(3))

    i = SAMPLE[name]
    x = encoder_input(io["raw"][i].numpy())
    assert (x - io["x"][i]).abs().max() <= 1e-6, "preprocessing differs from the reference transform"
    assert (enc.average_image() - io["avg_image"]).abs().max() <= IMAGE_TOL

    steps = enc.invert(io["x"][i:i + 1], steps=3, transform=io["transform"][i:i + 1])
    assert len(steps) == 3
    for k, step in enumerate(steps, 1):
        assert step.latents.shape == (1, 16, 512)
        assert (step.latents[0] - io[f"latents_{k}"][i]).abs().max() <= LATENT_TOL, f"latents step {k}"
        assert step.images.shape == (1, 3, 256, 256)
        assert (step.images[0] - io[f"images_{k}"][i]).abs().max() <= IMAGE_TOL, f"images step {k}"
        assert step.unaligned is not None
    assert (steps[-1].unaligned[0] - io["unaligned_3"][i]).abs().max() <= IMAGE_TOL
    # The transform was an override for that call only.
    assert torch.equal(enc.generator.synthesis.input.transform, torch.eye(3))


def test_checkpoint_is_read_weights_only_and_paths_allowed():
    ckpt, _ = fixture_files("ProgressiveBackboneEncoder")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(ckpt, map_location="cpu", weights_only=True)  # PosixPath needs the allowlist
    data = read_encoder_checkpoint(ckpt)
    assert isinstance(data.opts["exp_dir"], pathlib.PurePath)
    assert data.encoder_type == "ProgressiveBackboneEncoder"
    assert sum(k.startswith("encoder.") for k in data.state_dict) == 545
    # The golden weights are strided views into one buffer: loading must copy, not alias.
    assert any(not v.is_contiguous() for v in data.state_dict.values())


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_checkpoint_with_code_is_refused(tmp_path):
    bad = tmp_path / "evil.pt"
    torch.save({"state_dict": {"encoder.x": torch.zeros(1)}, "opts": {"encoder_type": _Payload()}}, bad)
    with pytest.raises(CheckpointError, match="refusing to load"):
        read_encoder_checkpoint(bad)


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"<!DOCTYPE html><html>", "HTML"),
    (b"PK\x03\x04garbage", "truncated or corrupt"),
])
def test_broken_files_give_one_line(tmp_path, content, message):
    path = tmp_path / "enc.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        read_encoder_checkpoint(path)


def test_generator_passed_as_encoder_is_named(tmp_path):
    path = tmp_path / "g.pt"
    torch.save({"state_dict": {"mapping.fc0.weight": torch.zeros(2, 2)}, "opts": {}}, path)
    with pytest.raises(CheckpointError, match="--network"):
        read_encoder_checkpoint(path)


def test_unknown_encoder_type_lists_the_supported_ones(tmp_path):
    ckpt, _ = fixture_files("BackboneEncoder")
    data = read_encoder_checkpoint(ckpt)
    path = tmp_path / "odd.pt"
    torch.save({"state_dict": {k: v.clone() for k, v in data.state_dict.items() if k.startswith("encoder.input")},
                "opts": {"encoder_type": "MysteryEncoder"}}, path)
    with pytest.raises(CheckpointError, match="MysteryEncoder.*BackboneEncoder"):
        load_encoder(path)


@pytest.mark.parametrize("cls", [ResNetBackboneEncoder, ResNetProgressiveBackboneEncoder])
def test_resnet34_encoders_round_trip_through_a_checkpoint(tmp_path, cls):
    # A ResNet-34 ReStyle checkpoint built from our module's names: the loader must accept exactly them.
    ckpt, io = fixture_files("BackboneEncoder")
    golden = read_encoder_checkpoint(ckpt)
    names = {k: v.shape for k, v in cls(n_styles=16, input_nc=6).state_dict().items()}
    assert "body.3.downsample.0.weight" in names and "body.15.conv2.weight" in names  # torchvision's BasicBlocks
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in names.items():
        if f"encoder.{key}" in golden.state_dict:  # the 16 style heads have the IR-SE50 encoder's shapes
            state[f"encoder.{key}"] = golden.state_dict[f"encoder.{key}"]
        elif key.endswith("num_batches_tracked"):
            state[f"encoder.{key}"] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[f"encoder.{key}"] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[f"encoder.{key}"] = torch.randn(shape, generator=gen) * 0.05
    state.update({k: v for k, v in golden.state_dict.items() if k.startswith("decoder.")})
    path = tmp_path / "resnet.pt"
    torch.save({"state_dict": state, "opts": {"encoder_type": cls.__name__, "n_iters_per_batch": 2,
                                              "exp_dir": pathlib.PosixPath("x")},
                "latent_avg": golden.latent_avg}, path)
    enc = load_encoder(path)
    assert enc.default_steps == 3 and type(enc.encoder) is cls  # stylegan3-editing's inference, not the ckpt's 2
    for key, value in enc.encoder.state_dict().items():
        assert torch.equal(value, state[f"encoder.{key}"]), key
    x = torch.cat([io["x"][:1], io["avg_image"][None]], dim=1)
    with torch.no_grad():
        feats = enc.encoder.features(x)
        codes = enc.encoder(x)
        heads = [enc.encoder.styles[j](feats) for j in (0, 5)]
    assert feats.shape == (1, 512, 16, 16) and codes.shape == (1, 16, 512)
    if cls is ResNetProgressiveBackboneEncoder:
        # e4e: style 0 is the shared base; every other style adds its own offset to it.
        assert torch.allclose(codes[:, 0], heads[0]) and torch.allclose(codes[:, 5], heads[0] + heads[1], atol=1e-5)
    else:
        assert torch.allclose(codes[:, 5], heads[1])
