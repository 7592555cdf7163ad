"""`sgtool train-encoder --arch psp --task super-resolution`: inputs degraded on the fly as `sgtool translate`
degrades them, a checkpoint in pSp's layout with the task's options, which translate loads."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from support.golden import GOLDEN, golden_dir
from sgtool.models.encoders.psp_tasks import PspTask
from sgtool.models.formats import torch_load
from sgtool.pipelines.train_encoder.data import degrade_batch, draw_factor
from sgtool.pipelines.translate.inputs import prepare_input

SG2 = GOLDEN / "generators" / "sg2_64.pkl"
TINY = ["--width", "0.0625", "--input-size", "64", "--backbone-init", "random", "--id-loss", "none",
        "--lpips-lambda", "0", "--device", "cpu", "--set", "test_images=2", "--optimizer", "adam", "--workers", "0"]


def sgtool(*args):
    return subprocess.run([sys.executable, "-m", "sgtool", *map(str, args)], capture_output=True, text=True)


def test_training_degradation_is_translates(tmp_path):
    """The trainer's float degradation and translate's 8-bit one (PIL resizes) differ by rounding only."""
    rng = np.random.RandomState(0)
    rgb = np.asarray(Image.fromarray(rng.randint(0, 256, (8, 8, 3)).astype(np.uint8)).resize((64, 64),
                                                                                                Image.BICUBIC))
    Image.fromarray(rgb).save(tmp_path / "face.png")
    task = PspTask("super-resolution", "celebs_super_resolution", 3, 0, (4,), input_size=64)
    for factor in (2, 4, 8):
        ours = prepare_input(tmp_path / "face.png", task, factor=factor)
        assert ours.lowres.shape == (64 // factor, 64 // factor, 3)
        target = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
        trained = degrade_batch(target, [factor])[0]
        assert (trained - ours.x).abs().max() <= 3 / 127.5, factor
    assert {draw_factor([1, 2, 4], 0, i, 0) for i in range(40)} == {1, 2, 4}
    assert draw_factor([1, 2, 4], 0, 7, 3) == draw_factor([1, 2, 4], 0, 7, 3)


def test_super_resolution_checkpoint_has_psps_layout_and_translate_loads_it(tmp_path):
    golden_dir("generators")
    run = tmp_path / "sr"
    result = sgtool("train-encoder", "-n", SG2, "--synthetic", "--arch", "psp", "--task", "super-resolution",
                    "--factors", "2,4", *TINY, "--steps", 2, "--batch-size", 2, "--val-every", 2, "--save-every", 2,
                    "-o", run, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    data = torch_load(run / "best.pt")
    opts = data["opts"]
    assert opts["dataset_type"] == "celebs_super_resolution" and opts["resize_factors"] == "2,4"
    assert (opts["encoder_type"], opts["label_nc"], opts["input_nc"], opts["n_styles"]) == ("GradualStyleEncoder",
                                                                                          0, 3, 10)
    assert opts["start_from_latent_avg"] and not opts["learn_in_w"]
    assert tuple(data["latent_avg"].shape) == (10, 32)  # the golden generator's w_dim
    assert {k.split(".")[0] for k in data["state_dict"]} == {"encoder", "decoder"}
    assert data["state_dict"]["encoder.input_layer.0.weight"].shape[1] == 3
    assert "decoder.style.1.weight" in data["state_dict"]  # rosinality's layout, as pSp's Generator loads

    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(tmp_path / "face.png")
    missing = sgtool("translate", tmp_path / "face.png", "-e", run / "best.pt", "-o", tmp_path / "t", "--device",
                     "cpu")
    assert missing.returncode == 2 and "2,4" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    done = sgtool("translate", tmp_path / "face.png", "-e", run / "best.pt", "--factor", "4", "-o", tmp_path / "t",
                  "--device", "cpu", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["settings"]["task"] == "super-resolution" and summary["items"][0]["factor"] == 4
    assert np.load(tmp_path / "t" / "face_latent.npy").shape == (10, 32)


def test_a_task_needs_the_psp_arch():
    result = sgtool("train-encoder", "-n", SG2, "--synthetic", "--arch", "e4e", "--task", "super-resolution",
                    "-o", "unused")
    assert result.returncode == 2 and "--arch psp" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
