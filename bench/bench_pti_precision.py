"""PTI step at 1024 px: the path before issue 20 against today's float32 and bf16, for StyleGAN3-R, -T and StyleGAN2.

One PTI step: render the pivot, LPIPS(alex, random backbone: the same arithmetic as ImageNet weights) + MSE,
backward, Adam update; JIT kernels. "before" is the float32 path as it was: every layer recomputed in backward
(activation checkpointing from 512 px) and 1x1 convolutions as grouped convolutions. "fp32" and "bf16" are
today's path: 1x1 convolutions as matmuls, filtered_lrelu's codes at two bits, and layers recomputed only where
memory needs it (`checkpoint_activations: auto`). Each case runs in its own process (peak memory = its
ru_maxrss). Prints seconds per step (median after one warm-up step), peak memory, minutes per photo for 350 steps,
and the speed-up over "before".

Environment: SGTOOL_BENCH_RESOLUTION (1024), SGTOOL_BENCH_STEPS (timed steps, 2), SGTOOL_BENCH_ARCHS
(comma list of stylegan3-r, stylegan3-t, stylegan2).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
STEPS_PER_PHOTO = 350


CASES = ("before", "fp32", "bf16")


def child(arch: str, case: str, resolution: int, steps: int) -> None:
    import torch

    sys.path.insert(0, str(HERE))
    from gpu_check import make_generator, sample_ws
    from timing import median_seconds

    from sgtool.kernels import conv
    from sgtool.pipelines.tune.pti import PivotalTuner, TuneTarget
    from sgtool.settings import PtiOptions

    warnings.simplefilter("ignore")
    precision, recompute = ("fp32", True) if case == "before" else (case, "auto")
    if case == "before":
        conv.one_by_one_as_matmul = lambda device: False
    generator = make_generator(arch, resolution, False, torch.device("cpu"))
    target = TuneTarget("t", torch.rand(3, resolution, resolution) * 2 - 1, sample_ws(generator, 1)[0])
    tuner = PivotalTuner(generator, [target], PtiOptions(steps=10_000, lpips_random_backbone=True, precision=precision,
                                                         lpips_threshold=0.0, checkpoint_activations=recompute))
    seconds = median_seconds(tuner.step, steps, warmup=True)
    print(json.dumps({"seconds": seconds, "used": tuner.precision, "recomputed": len(tuner.recomputed_layers),
                      "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}))


def main() -> None:
    resolution = int(os.environ.get("SGTOOL_BENCH_RESOLUTION", 1024))
    steps = int(os.environ.get("SGTOOL_BENCH_STEPS", 2))
    archs = os.environ.get("SGTOOL_BENCH_ARCHS", "stylegan3-r,stylegan3-t,stylegan2").split(",")
    print(f"PTI step at {resolution} px, median of {steps} after 1 warm-up, one process per case")
    print(f"{'arch':<12} {'path':>9} {'s/step':>8} {'peak GB':>8} {'min/photo':>10} {'speed-up':>9} "
          f"{'recomputed':>10}")
    for arch in archs:
        base = None
        for case in CASES:
            out = subprocess.run([sys.executable, __file__, "--child", arch, case, str(resolution), str(steps)],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{arch:<12} {case:>9} failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            result = json.loads(out.stdout.strip().splitlines()[-1])
            base = result["seconds"] if case == "before" else base
            ratio = f"{base / result['seconds']:.2f}x" if base else "-"
            used = "" if result["used"] == case or case == "before" else f" (ran {result['used']})"
            print(f"{arch:<12} {case + used:>9} {result['seconds']:>8.2f} {result['peak_gb']:>8.2f} "
                  f"{result['seconds'] * STEPS_PER_PHOTO / 60:>10.1f} {ratio:>9} {result['recomputed']:>10}",
                  flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
