"""Long work in a log or a pipe (Slurm, `2> log`): plain progress lines on stderr, not silence until the end."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from support.golden import golden_dir
from sgtool.commands.common import LineReporter
from sgtool.demo import SAMPLE, build_test_clip, build_test_models, make_clip

PROGRESS_LINE = re.compile(r"^\d\d:\d\d:\d\d .+: \d+(/\d+ \(\d+%\))?, \d+:\d\d:\d\d elapsed", re.M)
TEST_LPIPS = ["--set", "lpips_random_backbone=true"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("progress")
    sg2, sg3 = golden_dir("generators", "sg2_64.pkl"), golden_dir("generators", "sg3t_64.pkl")
    io2, io3 = (np.load(golden_dir("generators", f"{name}_io.npz")) for name in ("sg2_64", "sg3t_64"))
    np.save(folder / "a_latent.npy", io2["ws"][0])
    np.save(folder / "f_latent.npy", io3["ws"][0])
    np.save(folder / "d.npy", np.random.RandomState(0).randn(1, io2["ws"].shape[-1]).astype(np.float32))
    Image.fromarray(np.random.RandomState(1).randint(0, 256, (64, 64, 3), np.uint8)).save(folder / "a.png")
    models = build_test_models(folder / "models")
    clip_args, _ = build_test_clip(folder / "models")
    clip = make_clip(SAMPLE, folder / "clip.mp4", seconds=0.5, fps=8, size=192)
    return {"dir": folder, "sg2": str(sg2), "sg3": str(sg3), "models": models, "clip_args": clip_args,
            "clip": str(clip)}


COMMANDS = {
    "generate": lambda f: ["generate", "-n", f["sg2"], "--seeds", "0-2"],
    "align": lambda f: ["align", str(SAMPLE), "--size", "64"],
    "invert": lambda f: ["invert", f"{f['dir']}/a.png", "-m", "optimize", "-n", f["sg2"], "--no-align",
                         "--project-steps", "3", *TEST_LPIPS],
    "tune": lambda f: ["tune", f"{f['dir']}/a.png", "-n", f["sg2"], "--latents", f"{f['dir']}/a_latent.npy",
                       "--tune-steps", "2", "--no-align", *TEST_LPIPS],
    "edit": lambda f: ["edit", f"{f['dir']}/a_latent.npy", "-n", f["sg2"], "--direction", f"d={f['dir']}/d.npy",
                       "--sweep", "d=-1:1:3"],
    "mix": lambda f: ["mix", "-n", f["sg2"], "--rows", "0-1", "--cols", "2", "--layers", "0-3"],
    "directions styleclip": lambda f: ["directions", "styleclip", "-n", f["sg2"], "--samples", "1", "--set",
                                       "stats_samples=20", *f["clip_args"]],
    "expand-fov": lambda f: ["expand-fov", f"{f['dir']}/f_latent.npy", "-n", f["sg3"], "--all", "8"],
    "video": lambda f: ["video", f["clip"], "-e", f["models"].encoder, "-n", f["models"].network,
                        "--encoder-steps", "1", "--outputs", "output"],
    "train-encoder": lambda f: ["train-encoder", "-n", f["sg2"], "--synthetic", "--arch", "psp", "--width", "0.0625",
                                "--backbone-init", "random", "--input-size", "64", "--steps", "2", "--batch-size",
                                "2", "--test-images", "2", "--workers", "0", "--id-loss", "none", "--val-every",
                                "2", *TEST_LPIPS],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_prints_progress_lines_into_a_log(inputs, command, tmp_path):
    log = tmp_path / "stderr.log"
    env = {**os.environ, "SGTOOL_PROGRESS_SECONDS": "0"}  # a line at every step (the default: one every 30 s)
    with open(log, "w") as stderr:
        device = [] if command == "align" else ["--device", "cpu"]  # mediapipe runs on the CPU
        done = subprocess.run([sys.executable, "-m", "sgtool", *COMMANDS[command](inputs), "-o", str(tmp_path / "o"),
                               *device], stderr=stderr, stdout=subprocess.DEVNULL, env=env, timeout=600, cwd=tmp_path)
    text = log.read_text()
    assert done.returncode == 0, text
    assert PROGRESS_LINE.search(text), text
    assert "\x1b[" not in text  # no terminal codes in a log


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_line_reporter_prints_at_its_interval_with_the_nested_task_and_the_time_left(capsys):
    clock = FakeClock()
    reporter = LineReporter(interval=30, clock=clock)
    reporter.start("invert", 4)
    reporter.advance()
    clock.now = 10
    reporter.start("projecting a.jpg", 100)
    reporter.advance(10, info="loss 0.5")
    assert capsys.readouterr().err == ""  # nothing before the first interval
    clock.now = 40
    reporter.advance(30, info="loss 0.25")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and re.search(r"invert: 1/4 \(25%\), 0:00:40 elapsed, about 0:02:00 left > projecting "
                                         r"a.jpg: 40/100 \(40%\), 0:00:30 elapsed, about 0:00:45 left \[loss 0.25\]",
                                         lines[0]), lines
    clock.now = 50
    reporter.advance(10)
    reporter.finish()
    assert capsys.readouterr().err == ""  # the next line waits for the interval
    reporter.note("tuning a: resuming from out/checkpoint.pt at step 50")
    assert "resuming from out/checkpoint.pt" in capsys.readouterr().err


def test_a_quiet_line_reporter_still_prints_warnings_and_notes(capsys):
    clock = FakeClock()
    reporter = LineReporter(quiet=True, interval=0, clock=clock)
    reporter.start("batch", 2)
    reporter.advance()
    reporter.warn("skipped photo[1].jpg")
    assert capsys.readouterr().err.strip().endswith("skipped photo[1].jpg")
