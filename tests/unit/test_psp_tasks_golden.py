"""pSp's image-to-image tasks against the reference code's outputs (../shared/golden/sg2/psp_tasks, tolerances from
its README): each task's preprocessing of the saved input files, the codes, the renders and the style mixing."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from PIL import Image

from support.golden import golden_dir
from sgtool.errors import CheckpointError, SgtoolError
from sgtool.models.encoders.psp_tasks import PspTask, load_translator, mix_codes, task_of
from sgtool.models.encoders import read_encoder_checkpoint
from sgtool.pipelines.translate.inputs import CELEBAMASK_PALETTE, degrade, prepare_input, read_palette, resize_256

CODE_TOL = dict(atol=1e-4, rtol=1e-5)
IMAGE_TOL = dict(atol=2e-4, rtol=0)
FIXTURES = {"sketch": "sketch", "seg": "segmentation", "superres": "super-resolution", "frontalize": "photo"}
RENDERED = {"sketch": 0, "seg": 1, "superres": 1, "frontalize": 0}


def close(actual, expected, tol):
    expected = torch.as_tensor(np.asarray(expected))
    assert actual.shape == expected.shape
    err = (actual.detach().to(expected.dtype) - expected).abs().max().item()
    assert torch.allclose(actual.detach().to(expected.dtype), expected, **tol), f"max abs error {err}"


@functools.lru_cache(maxsize=None)
def _loaded(name: str, files):
    folder = golden_dir("sg2", "psp_tasks", f"psp_{name}_64")
    io = dict(np.load(folder / "io.npz"))
    paths = []
    for i in range(2):
        paths.append(files / f"{name}_input_{i}.png")
        Image.fromarray(io[f"input_raw_{i}"]).save(paths[-1])
    translator = load_translator(folder / f"psp_{name}_64.pt")
    prepared = [prepare_input(p, translator.task, factor=8 if name == "superres" else None) for p in paths]
    codes = translator.encode(torch.stack([p.x for p in prepared]))  # one encoder pass serves both tests
    return name, translator, io, prepared, codes


@pytest.fixture(scope="module")
def inputs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("psp_tasks")


@pytest.fixture(scope="module", params=list(FIXTURES))
def fixture(request, inputs_dir):
    """(name, translator, io arrays, the two inputs prepared from files as the reference read them, their codes)."""
    return _loaded(request.param, inputs_dir)


@pytest.fixture(scope="module", params=["sketch", "seg"])
def mixing_fixture(request, inputs_dir):
    """The fixtures with recorded style mixing."""
    return _loaded(request.param, inputs_dir)


def test_task_preprocessing_codes_and_images_match_reference(fixture):
    name, translator, io, prepared, codes = fixture
    assert translator.task.kind == FIXTURES[name] and translator.num_ws == 10
    x = torch.stack([p.x for p in prepared])
    assert x.dtype == torch.from_numpy(io["x"]).dtype  # float32, or int64 for the one-hot
    assert torch.equal(x, torch.from_numpy(io["x"])), "preprocessing differs from transform_inference"
    if name == "seg":
        assert np.array_equal(np.stack([p.labels for p in prepared]), io["label_resized"])
    if name == "superres":
        assert np.array_equal(np.stack([p.lowres for p in prepared]), io["lowres_f8"])
    close(translator.latent_avg, io["latent_avg"], dict(atol=0, rtol=0))
    close(codes - translator.latent_avg, io["codes_raw"], CODE_TOL)
    close(codes, io["codes"], CODE_TOL)
    # Rendering is the slow part on a CPU: one image per fixture, alternating, the codes of both were checked.
    i = RENDERED[name]
    images = translator.render(codes[i:i + 1], resize=name == "frontalize")
    if name == "frontalize":  # --resize_outputs: the 64 px render pooled to 256
        close(images, io["images_resize_outputs"][i:i + 1], IMAGE_TOL)
    else:  # native 64 px with the checkpoint's noise buffers
        close(images, io["images"][i:i + 1], IMAGE_TOL)


def test_style_mixing_matches_reference(mixing_fixture):
    name, translator, io, _, codes = mixing_fixture
    inject = translator.inject_codes(torch.from_numpy(io["mix_z"][0]))
    close(inject, io["mix_inject_latent"][0], CODE_TOL)
    mask = io["mix_latent_mask"].tolist()
    ours = codes[:1]  # batch of 2; the reference encoded a batch of 1 (float rounding apart, the same)
    close(ours - translator.latent_avg, io["mix_codes_raw"], CODE_TOL)
    reference_codes = torch.from_numpy(io["mix_codes_raw"] + io["latent_avg"])
    reference_inject = torch.from_numpy(io["mix_inject_latent"][0])
    noise = [torch.from_numpy(io[f"mix_noise_{layer}"][0]) for layer in range(9)]
    for tag, alpha in (("alpha_none", None), ("alpha05", 0.5)):
        expected = io[f"mix_codes_{tag}"][0]
        # The rule is exact given the codes: which rows, and the blend in pSp's order.
        assert torch.equal(mix_codes(reference_codes.expand(3, -1, -1), reference_inject, mask, alpha),
                           torch.from_numpy(expected))
        mixed = mix_codes(ours.expand(3, -1, -1), inject, mask, alpha)
        close(mixed, expected, CODE_TOL)
        kept = [i for i in range(10) if i not in mask]
        assert torch.equal(mixed[:, kept], ours.expand(3, -1, -1)[:, kept])
        close(translator.render(mixed, noise=noise), io[f"mix_images_{tag}"][0], IMAGE_TOL)


def test_every_training_factor_degrades_as_the_reference():
    io = np.load(golden_dir("sg2", "psp_tasks", "psp_superres_64") / "io.npz")
    for i in range(2):
        image = np.asarray(resize_256(Image.fromarray(io[f"input_raw_{i}"])))
        for factor in (1, 2, 4, 8, 16, 32):
            low = degrade(image, factor)
            assert np.array_equal(low, io[f"lowres_f{factor}"][i]), f"factor {factor}, image {i}"
    # Factor 1 is not the identity (half-pixel shift and truncation).
    assert not np.array_equal(degrade(image, 1), image)


def test_super_resolution_factor_is_required_and_task_read_from_opts(tmp_path):
    folder = golden_dir("sg2", "psp_tasks", "psp_superres_64")
    ckpt = read_encoder_checkpoint(folder / "psp_superres_64.pt")
    task = task_of(ckpt)
    assert task.factors == (1, 2, 4, 8, 16, 32)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(SgtoolError, match="--factor"):
        prepare_input(tmp_path / "small.png", task)
    ckpt.opts["input_nc"] = 1
    with pytest.raises(CheckpointError, match="input_nc is 1"):
        task_of(ckpt)


def test_label_inputs_are_checked_and_palettes_decoded(tmp_path):
    seg = PspTask("segmentation", "celebs_seg_to_face", 19, 19)
    sketch = PspTask("sketch", "celebs_sketch_to_face", 1, 1)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.repeat(rng.integers(0, 19, (8, 8)), 32, 0), 32, 1).astype(np.uint8)
    Image.fromarray(labels).save(tmp_path / "ids.png")
    prepared = prepare_input(tmp_path / "ids.png", seg)
    assert prepared.x.dtype == torch.int64 and prepared.x.shape == (19, 256, 256)
    assert torch.equal(prepared.x.argmax(0), torch.from_numpy(labels.astype(np.int64)))
    assert int(prepared.x.sum()) == 256 * 256
    # The same map colour-coded with pSp's colours, read back with the palette; as a palette PNG, by its indices.
    coloured = np.array(CELEBAMASK_PALETTE, np.uint8)[labels]
    Image.fromarray(coloured).save(tmp_path / "colours.png")
    assert torch.equal(prepare_input(tmp_path / "colours.png", seg, palette=read_palette("celebamask")).x,
                       prepared.x)
    indexed = Image.fromarray(labels, mode="L").convert("P")
    indexed.putpalette([v for c in CELEBAMASK_PALETTE for v in c])
    indexed.save(tmp_path / "indexed.png")
    assert torch.equal(prepare_input(tmp_path / "indexed.png", seg).x, prepared.x)
    (tmp_path / "palette.txt").write_text("\n".join(f"#{r:02x}{g:02x}{b:02x}" for r, g, b in CELEBAMASK_PALETTE))
    assert np.array_equal(read_palette(tmp_path / "palette.txt"), read_palette("celebamask"))
    # Bad inputs: one line each.
    with pytest.raises(SgtoolError, match="colour image.*--palette"):
        prepare_input(tmp_path / "colours.png", seg)
    Image.fromarray(np.full((64, 64), 19, np.uint8)).save(tmp_path / "high.png")
    with pytest.raises(SgtoolError, match="class id 19.*19 classes"):
        prepare_input(tmp_path / "high.png", seg)
    photo = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    with pytest.raises(SgtoolError, match="colour image.*sketch"):
        prepare_input(tmp_path / "photo.png", sketch)
    with pytest.raises(SgtoolError, match="match no colour"):
        prepare_input(tmp_path / "photo.png", seg, palette=read_palette("celebamask"))
    # A grayscale sketch saved as RGB is a sketch.
    gray = np.repeat(rng.integers(0, 256, (64, 64, 1)).astype(np.uint8), 3, axis=2)
    Image.fromarray(gray).save(tmp_path / "gray_rgb.png")
    x = prepare_input(tmp_path / "gray_rgb.png", sketch).x
    assert x.shape == (1, 256, 256) and 0 <= float(x.min()) and float(x.max()) <= 1
