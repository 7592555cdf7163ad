"""`sgtool train-encoder --arch psp --task sketch|segmentation|frontalization|toonify|inpainting`: paired folders
(source/ and target/, matched by name) and photos with on-the-fly sources; the encoder input made as
`sgtool translate` makes it; checkpoints in pSp's layout that translate runs; bad training data as one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from support.golden import GOLDEN, golden_dir
from sgtool.cli import app
from sgtool.models.formats import torch_load
from sgtool.pipelines.train_encoder.image_tasks import (MASK_FILL, PairedImages, draw_mask, encoder_source,
                                                         run_task, scan_pairs)
from sgtool.pipelines.translate.inputs import prepare_input
from sgtool.settings import TrainEncoderSettings

runner = CliRunner()
SG2 = GOLDEN / "generators" / "sg2_64.pkl"
TINY = ["--width", "0.0625", "--input-size", "64", "--backbone-init", "random", "--id-loss", "none",
        "--lpips-lambda", "0", "--device", "cpu", "--set", "test_images=2", "--optimizer", "adam", "--workers", "0",
        "--steps", "2", "--batch-size", "2", "--val-every", "2", "--save-every", "2"]
CLASSES = 19


def _photo(rng) -> np.ndarray:
    """A smooth 64 px RGB image (random 8x8 colours, bicubic)."""
    return np.asarray(Image.fromarray(rng.randint(0, 256, (8, 8, 3)).astype(np.uint8)).resize((64, 64),
                                                                                                Image.BICUBIC))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """photos/ and PAIRS folders: sketches (grayscale), class-id maps, photo -> photo (toonify, frontalization)."""
    golden_dir("generators")
    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.RandomState(0)
    folders = {name: root / name for name in ("photos", "sketch", "segmentation", "toonify")}
    folders["photos"].mkdir()
    for name in ("sketch", "segmentation", "toonify"):
        (folders[name] / "source" / "set").mkdir(parents=True)
        (folders[name] / "target" / "set").mkdir(parents=True)
    for i in range(6):
        photo = _photo(rng)
        Image.fromarray(photo).save(folders["photos"] / f"{i}.png")
        sources = {"sketch": ((photo.mean(axis=2) > 120) * 255).astype(np.uint8),
                   "segmentation": (photo[..., 0].astype(np.int64) * CLASSES // 256).astype(np.uint8),
                   "toonify": _photo(rng)}
        for name, source in sources.items():  # sources PNG, targets JPEG: paired by name, not extension
            Image.fromarray(source).save(folders[name] / "source" / "set" / f"{i:03d}.png")
            Image.fromarray(photo).save(folders[name] / "target" / "set" / f"{i:03d}.jpg", quality=95)
    return folders


def _train(task: str, data_folder, out, *extra):
    result = runner.invoke(app, ["train-encoder", "-n", str(SG2), "--data", str(data_folder), "--arch", "psp",
                                 "--task", task, *TINY, *extra, "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output[-3000:]
    return torch_load(out / "best.pt")


OPTS = {  # task, data -> pSp's dataset_type, label_nc, input_nc
    ("sketch", "sketch"): ("celebs_sketch_to_face", 1, 1),
    ("segmentation", "segmentation"): ("celebs_seg_to_face", CLASSES, CLASSES),
    ("toonify", "toonify"): ("ffhq_encode", 0, 3),
    ("frontalization", "toonify"): ("ffhq_frontalize", 0, 3),
    ("frontalization", "photos"): ("ffhq_frontalize", 0, 3),
    ("inpainting", "photos"): ("ffhq_encode", 0, 3),
}


@pytest.fixture(scope="module")
def psp_option_fields() -> set[str]:
    """The option fields of pSp's train_options.py, as its task checkpoints hold them."""
    return set(torch_load(golden_dir("sg2", "psp_tasks", "psp_seg_64", "psp_seg_64.pt"))["opts"])


@pytest.mark.parametrize("task,folder", list(OPTS))
def test_each_task_trains_and_translate_runs_its_checkpoint(data, psp_option_fields, tmp_path, task, folder):
    ckpt = _train(task, data[folder], tmp_path / "run")
    opts, state = ckpt["opts"], ckpt["state_dict"]
    dataset_type, label_nc, input_nc = OPTS[task, folder]
    assert (opts["dataset_type"], opts["label_nc"], opts["input_nc"]) == (dataset_type, label_nc, input_nc)
    assert opts["encoder_type"] == "GradualStyleEncoder" and opts["resize_factors"] is None
    assert set(opts) == psp_option_fields
    assert opts["start_from_latent_avg"] and not opts["learn_in_w"]
    assert state["encoder.input_layer.0.weight"].shape[1] == input_nc
    assert {k.split(".")[0] for k in state} == {"encoder", "decoder"}
    assert ckpt["sgtool"]["task"]["task"] == task
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    paired = folder != "photos"
    assert run["data"]["train"] + run["data"]["test"] == 6 and run["data"]["unreadable"] == 0
    grid = np.asarray(Image.open(next((tmp_path / "run" / "val").glob("*.png"))))
    assert grid.shape[1] >= 64 * 3  # source | target | output: every task has its own source

    source = data[folder] / "source" / "set" / "001.png" if paired else data[folder] / "1.png"
    result = runner.invoke(app, ["translate", str(source), "-e", str(tmp_path / "run" / "best.pt"),
                                 "-o", str(tmp_path / "t"), "--device", "cpu", "--outputs", "1", "--json"])
    assert result.exit_code == 0, result.output[-2000:]
    summary = json.loads(result.stdout)
    assert summary["settings"]["dataset_type"] == dataset_type
    stem = source.stem
    assert np.load(tmp_path / "t" / f"{stem}_latent.npy").shape == (10, 32)
    assert Image.open(tmp_path / "t" / f"{stem}_translation.png").size == (64, 64)


def _settings(task, folder, **extra) -> TrainEncoderSettings:
    return TrainEncoderSettings(network=str(SG2), data=folder, arch="psp", task=task, input_size=64, width=0.0625,
                                backbone_init="random", **extra)


def test_training_sources_are_translates_inputs(data):
    """A pair's source tensor is what translate feeds the encoder for the same file: the sketch one channel in
    [0, 1], the label map one-hot of the file's class ids; pairs are matched by name across extensions."""
    for task in ("sketch", "segmentation"):
        settings = _settings(task, data[task])
        pairs = scan_pairs(data[task], run_task(settings)).pairs
        assert [(s.stem, t.stem, t.suffix) for s, t in pairs] == [(f"{i:03d}", f"{i:03d}", ".jpg") for i in range(6)]
        item = PairedImages(pairs, run_task(settings))[2]
        translate = prepare_input(pairs[2][0], run_task(settings)).x
        assert item["source"].dtype == torch.float32 and torch.equal(item["source"], translate.float())
        ids = np.asarray(Image.open(pairs[2][0]))
        if task == "sketch":
            assert item["source"].shape == (1, 64, 64)
            assert torch.allclose(item["source"][0], torch.from_numpy(ids / 255).float(), rtol=0, atol=1e-7)
        else:
            assert item["source"].shape == (CLASSES, 64, 64) and torch.equal(item["source"].sum(0),
                                                                             torch.ones(64, 64))
            assert np.array_equal(item["source"].argmax(0).numpy(), ids)
        target = np.asarray(Image.open(pairs[2][1]).convert("RGB"), dtype=np.float32) / 127.5 - 1
        assert np.allclose(item["image"].numpy(), target.transpose(2, 0, 1), atol=1e-6)


def test_toonify_pairs_flip_together(data):
    settings = _settings("toonify", data["toonify"])
    pairs = scan_pairs(data["toonify"], run_task(settings)).pairs
    plain, flipping = PairedImages(pairs, run_task(settings)), PairedImages(pairs, run_task(settings), flip=True)
    flipped = 0
    for i in range(len(pairs)):
        a, b = plain[i], flipping[i]
        same = torch.equal(a["image"], b["image"])
        flipped += not same
        assert torch.equal(b["image"], a["image"] if same else a["image"].flip(-1))
        assert torch.equal(b["source"], a["source"] if same else a["source"].flip(-1))
    assert 0 < flipped < len(pairs)


def test_inpainting_source_is_the_masked_photo_translate_reads(data, tmp_path):
    """Holes drawn per image and epoch from the seed, painted MASK_FILL: the training input equals translate's
    input for the masked photo saved as a PNG."""
    settings = _settings("inpainting", data["photos"], seed=5)
    rgb = np.asarray(Image.open(data["photos"] / "3.png"))
    target = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    source = encoder_source(settings, {"index": torch.tensor([3])}, target, epoch=2)[0]
    holes = draw_mask(5, 2, 3, 64)
    assert torch.equal(holes, draw_mask(5, 2, 3, 64)) and not torch.equal(holes, draw_mask(5, 3, 3, 64))
    assert 0 < holes.float().mean() < 0.75
    masked = rgb.copy()
    masked[holes.numpy()] = MASK_FILL
    Image.fromarray(masked).save(tmp_path / "masked.png")
    translate = prepare_input(tmp_path / "masked.png", run_task(settings)).x
    assert (source - translate).abs().max() < 1e-6
    shares = [float(draw_mask(0, 0, i, 64).float().mean()) for i in range(200)]
    assert 1 / 64 <= min(shares) and max(shares) <= 0.75 and np.std(shares) > 0.05


def test_frontalization_from_photos_flips_the_source_apart_from_the_target(data):
    settings = _settings("frontalization", data["photos"])
    target = torch.randn(16, 3, 8, 8)
    source = encoder_source(settings, {"index": torch.arange(16)}, target, epoch=0)
    flipped = [torch.equal(source[i], target[i].flip(-1)) for i in range(16)]
    assert all(f or torch.equal(source[i], target[i]) for i, f in enumerate(flipped))
    assert 0 < sum(flipped) < 16
    again = encoder_source(settings, {"index": torch.arange(16)}, target, epoch=1)
    assert not torch.equal(source, again)  # drawn anew each epoch


def _bad(args, *needles):
    result = runner.invoke(app, ["train-encoder", "-n", str(SG2), *TINY, *args])
    text = result.stderr.strip()
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(text.splitlines()) == 1, text
    for needle in needles:
        assert needle in text, (needle, text)


def test_bad_training_pairs_are_one_line(data, tmp_path):
    import shutil

    unmatched = tmp_path / "unmatched"
    shutil.copytree(data["sketch"], unmatched)
    (unmatched / "source" / "set" / "004.png").rename(unmatched / "source" / "set" / "044.png")
    _bad(["--arch", "psp", "--task", "sketch", "--data", str(unmatched), "-o", str(tmp_path / "r1")], "044.png", "no file of the same "
         "name", "1 sources and 1 targets unmatched")
    rgb = tmp_path / "rgb"
    shutil.copytree(data["toonify"], rgb)  # photos as sketch sources
    _bad(["--arch", "psp", "--task", "sketch", "--data", str(rgb), "-o", str(tmp_path / "r2")], "000.png", "colour image",
         "grayscale sketches")
    _bad(["--arch", "psp", "--task", "segmentation", "--classes", "4", "--data", str(data["segmentation"]), "-o",
          str(tmp_path / "r3")], "source/set/00", "class id", "--classes")
    _bad(["--arch", "psp", "--task", "sketch", "--data", str(data["photos"]), "-o", str(tmp_path / "r4")], "no source/ and target/")
    _bad(["--arch", "psp", "--task", "toonify", "--synthetic", "-o", str(tmp_path / "r5")], "paired files", "--data PAIRS")
    _bad(["--task", "sketch", "--arch", "e4e", "--data", str(data["sketch"]), "-o", str(tmp_path / "r6")],
         "--arch psp")
    assert not any((tmp_path / f"r{i}").exists() for i in range(1, 7))


def test_a_label_encoder_starts_with_a_random_input_layer_as_psp(tmp_path):
    """From the IR-SE50 backbone a sketch or label encoder takes the body only (pSp's load_weights drops
    input_layer.* when label_nc != 0); a photo task takes the input layer too."""
    from sgtool.models.encoders.sg2_encoders import GradualStyleEncoder
    from sgtool.pipelines.train_encoder.pretrained import load_backbone

    torch.manual_seed(0)
    backbone = GradualStyleEncoder(10, input_nc=3, width=0.0625, style_dim=32, input_size=64).state_dict()
    backbone = {k: v for k, v in backbone.items() if k.startswith(("input_layer.", "body."))}
    torch.save(backbone, tmp_path / "irse.pt")
    for task, folder, input_nc in (("sketch", tmp_path, 1), ("segmentation", tmp_path, CLASSES),
                                   ("toonify", tmp_path, 3)):
        settings = _settings(task, folder, backbone_weights=str(tmp_path / "irse.pt"))
        encoder = GradualStyleEncoder(10, input_nc=input_nc, width=0.0625, style_dim=32, input_size=64)
        before = {k: v.clone() for k, v in encoder.state_dict().items()}
        load_backbone(encoder, settings)
        after = encoder.state_dict()
        assert all(torch.equal(after[k], backbone[k]) for k in backbone if k.startswith("body."))
        kept = all(torch.equal(after[k], before[k]) for k in before if k.startswith("input_layer."))
        assert kept == (task != "toonify")
