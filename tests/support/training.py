"""`sgtool train-encoder` as the end-to-end tests run it: tiny encoders on the golden 64 px generators."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support.golden import GOLDEN

SG2 = GOLDEN / "generators" / "sg2_64.pkl"
SG3 = GOLDEN / "generators" / "sg3t_64.pkl"
TINY = ["--width", "0.0625", "--input-size", "64", "--backbone-init", "random", "--id-loss", "none",
        "--lpips-lambda", "0", "--device", "cpu", "--set", "test_images=8", "--optimizer", "adam", "--lr", "1e-3",
        "--workers", "0"]
E4E_FAST = ["--set", "progressive_start=0", "--set", "progressive_step_every=10"]


def train(*args, env=None, check=True, launcher=("-m", "sgtool")):
    result = subprocess.run([sys.executable, *launcher, "train-encoder", *map(str, args), "--json"],
                            capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(result.stderr[-3000:])
    return result


def held_out(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss_l2"] for r in rows if r["split"] == "test"]
