"""Encoder training speed on the CPU: ReStyle-pSp over IR-SE50 (full width) at 256 px, batch 2, on the
golden StyleGAN3-T 64 px generator, one process and two gloo processes (torchrun, the same global batch).

Prints the median seconds per training step of each run (validation and saving left out) as steps
per second, and the ratio of two processes to one. Usage: python bench/bench_train_encoder.py [--steps N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden" / "generators" / "sg3t_64.pkl"


def run(steps: int, outdir: Path, processes: int) -> dict:
    launcher = ["-m", "sgtool"] if processes == 1 else \
        ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes), "-m", "sgtool"]
    args = ["train-encoder", "-n", str(GOLDEN), "--synthetic", "--arch", "restyle-psp", "--backbone", "ir-se50",
            "--backbone-init", "random", "--id-loss", "none", "--lpips-weight", "0.8", "--set",
            "lpips_random_backbone=true", "--encoder-steps", "1", "--batch-size", "2", "--steps", str(steps),
            "--val-every", str(steps), "--save-every", str(steps), "--set", "test_images=2", "--workers", "0",
            "--device", "cpu", "-o", str(outdir), "--json"]
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // processes)))
    result = subprocess.run([sys.executable, *launcher, *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    return json.loads((outdir / "run.json").read_text())["summary"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=7)
    args, _ = parser.parse_known_args()  # run_all.py leaves its own arguments in sys.argv
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for processes in (1, 2):
            summary = run(args.steps, Path(tmp) / f"p{processes}", processes)
            rows.append((processes, 1 / summary["seconds_per_step_median"]))
    base = rows[0][1]
    print(f"train-encoder, ReStyle-pSp IR-SE50 256 px, batch 2 (global), median of {args.steps} steps")
    print(f"{'processes':>10} {'steps/s':>10} {'s/step':>10} {'vs 1 process':>14}")
    for processes, rate in rows:
        print(f"{processes:>10} {rate:>10.3f} {1 / rate:>10.2f} {rate / base:>13.2f}x")


if __name__ == "__main__":
    main()
