"""`sgtool tune`: seconds per PTI step and peak memory, reference vs JIT kernels.

A PTI step = render the pivot, LPIPS(alex) + MSE to the target, backward, then the locality term
(off by default, as in PTI's release; on here, the costlier case: a latent alpha=30 from the pivot
rendered by the tuned and the frozen generator, L2 + LPIPS, backward) and one Adam update. Sizes: the 64 px golden
fixtures, and a 1024 px StyleGAN3-R (random weights, z/w 512; activation checkpointing where `tune` chooses it: the
largest layers when a step's saved activations would exceed half the free memory). Each case runs
in its own process so that its peak resident memory (ru_maxrss) is its own.

Environment: SGTOOL_BENCH_STEPS (timed steps at 64 px, default 5), SGTOOL_BENCH_SKIP_1024=1.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = (ROOT / ".." / "shared" / "golden" / "generators").resolve()
GOLDEN_CASES = ("sg3t_64", "sg3r_64", "sg2_64")
SG3R_1024 = dict(z_dim=512, w_dim=512, c_dim=0, img_resolution=1024, img_channels=3, channel_base=65536,
                 channel_max=1024, conv_kernel=1, use_radial_filters=True)


def child(case: str, backend: str, steps: int) -> None:
    """Time `steps` PTI steps after one warm-up step (none at 1024) and print one JSON line."""
    import torch

    from sgtool import kernels
    from sgtool.losses import load_lpips
    from sgtool.models import build_generator, load_generator
    from sgtool.pipelines.tune import PivotalTuner, TuneSettings, TuneTarget

    torch.manual_seed(0)
    if case == "sg3r_1024":
        G = build_generator("stylegan3", SG3R_1024).eval().requires_grad_(False)
    else:
        G = load_generator(GOLDEN / f"{case}.pkl")
    lpips_model = load_lpips("alex", random_backbone=True)  # same network and cost as the pretrained one
    with torch.no_grad():
        pivot = G.mapping(torch.randn(1, G.z_dim), None, truncation_psi=0.7)[0]
    size = G.img_resolution
    target = TuneTarget("bench", torch.rand(3, size, size) * 2 - 1, pivot)
    settings = TuneSettings(steps=10_000, lpips_threshold=0.0, lpips_random_backbone=True, locality=True)
    fell_back = False
    with kernels.use(backend), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Built under the backend: which layers are recomputed depends on what the ops keep for backward.
        tuner = PivotalTuner(G, [target], settings, lpips_model=lpips_model)
        if case != "sg3r_1024":
            tuner.step()
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            tuner.step()
            times.append(time.perf_counter() - start)
        fell_back = any("reference" in str(w.message).lower() for w in caught)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(json.dumps({"median": statistics.median(times), "peak_gb": peak_gb, "fell_back": fell_back,
                      "recomputed": len(tuner.recomputed_layers)}))


def run_case(case: str, backend: str, steps: int) -> dict | None:
    proc = subprocess.run([sys.executable, __file__, "--child", case, backend, str(steps)], capture_output=True,
                          text=True, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"  {case} [{backend}] failed: {tail}", flush=True)
        return None
    return json.loads(lines[-1])


def main() -> None:
    from sgtool import kernels

    steps = int(os.environ.get("SGTOOL_BENCH_STEPS", "5"))
    backends = ["ref"] + (["jit"] if "jit" in kernels.BACKENDS else [])
    if "jit" not in backends:
        print("note: this build has no 'jit' kernel backend; measuring the reference only")
    cases = [(c, steps) for c in GOLDEN_CASES if (GOLDEN / f"{c}.pkl").is_file()]
    if len(cases) < len(GOLDEN_CASES):
        print(f"note: golden fixtures not found under {GOLDEN}; skipping them")
    if os.environ.get("SGTOOL_BENCH_SKIP_1024") != "1":
        cases.append(("sg3r_1024", 1))
    print(f"torch threads: {__import__('torch').get_num_threads()}; PTI step = pivot LPIPS+MSE + locality term + "
          "Adam, batch 1", flush=True)
    header = f"{'case':<10} {'backend':<8} {'steps':>5} {'s/step (median)':>16} {'vs ref':>7} {'peak RSS GB':>12}"
    print(header)
    print("-" * len(header))
    for case, count in cases:
        reference = None
        for backend in backends:
            row = run_case(case, backend, count)
            if row is None:
                continue
            if backend == "ref":
                reference = row["median"]
            ratio = f"{reference / row['median']:.2f}x" if reference else "-"
            note = " (fell back to ref)" if row["fell_back"] and backend != "ref" else ""
            note += f" [{row['recomputed']} layers recomputed]" if row["recomputed"] else ""
            print(f"{case:<10} {backend:<8} {count:>5} {row['median']:>16.3f} {ratio:>7} {row['peak_gb']:>12.2f}"
                  f"{note}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
