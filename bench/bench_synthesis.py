"""StyleGAN3 synthesis on the reference ops vs the JIT-compiled kernels (CPU by default).

Each (architecture, pass, backend) case runs in its own process so its peak memory (ru_maxrss)
is its own. Random weights with the official 1024 px channel counts, batch 1. Prints the median
of --runs timed runs after --warmup untimed ones, the speedup and the peak memory of each side.

    python bench/run_all.py synthesis                       # the full table (slow on 2 cores)
    python bench/bench_synthesis.py --resolution 256 --runs 3 --archs t
Environment overrides (for `make bench`): SGTOOL_BENCH_RESOLUTION, SGTOOL_BENCH_RUNS, SGTOOL_BENCH_WARMUP.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ARCHS = {
    "t": ("stylegan3-t", dict(channel_base=32768, channel_max=512, conv_kernel=3)),
    "r": ("stylegan3-r", dict(channel_base=65536, channel_max=1024, conv_kernel=1, use_radial_filters=True)),
}
PASSES = {"fwd": "forward", "fwdbwd": "forward+backward"}


def child(arch: str, pass_: str, backend: str, resolution: int, runs: int, warmup: int, device: str) -> dict:
    import torch

    from sgtool import kernels
    from sgtool.models import build_generator

    torch.manual_seed(0)
    init = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=resolution, img_channels=3,
                mapping_kwargs=dict(num_layers=2), **ARCHS[arch][1])
    G = build_generator("stylegan3", init).eval().to(device)
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, 512, device=device), None)
    backward = pass_ == "fwdbwd"
    G.requires_grad_(backward)
    ws.requires_grad_(backward)

    def step():
        with torch.set_grad_enabled(backward), kernels.use(backend):
            img = G.synthesis(ws, noise_mode="const")
            if backward:
                img.square().mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()

    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2 ** 20
    return {"times": times, "peak_mb": peak_mb, "threads": torch.get_num_threads()}


def run_case(args, arch, pass_, backend) -> dict | None:
    """The child's result, or None (with the reason on stderr) when it failed, e.g. killed for memory."""
    cmd = [sys.executable, __file__, "--child", arch, pass_, backend, "--resolution", str(args.resolution),
           "--runs", str(args.runs), "--warmup", str(args.warmup), "--device", args.device]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        reason = f"killed by signal {-result.returncode}" if result.returncode < 0 else \
            f"exit {result.returncode}: {result.stderr.strip().splitlines()[-1:]}"
        print(f"  ({arch}/{pass_}/{backend} failed: {reason})", file=sys.stderr, flush=True)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def _cell(result, key, fmt):
    if result is None:
        return "failed"
    value = statistics.median(result["times"]) if key == "time" else result[key]
    return format(value, fmt)


def main(argv=None):
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=int(env("SGTOOL_BENCH_RESOLUTION", 1024)))
    parser.add_argument("--runs", type=int, default=int(env("SGTOOL_BENCH_RUNS", 5)))
    parser.add_argument("--warmup", type=int, default=int(env("SGTOOL_BENCH_WARMUP", 1)))
    parser.add_argument("--archs", default="t,r")
    parser.add_argument("--passes", default="fwd,fwdbwd")
    parser.add_argument("--backends", default="ref,jit", help="leave out ref where it does not fit in memory")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", nargs=3, metavar=("ARCH", "PASS", "BACKEND"))
    args, _ = parser.parse_known_args(argv)  # run_all.py leaves its own arguments in sys.argv
    if args.child:
        print(json.dumps(child(*args.child, args.resolution, args.runs, args.warmup, args.device)))
        return

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "src"))
    print(f"StyleGAN3 synthesis {args.resolution}px, batch 1, {args.device}, median of {args.runs} runs after "
          f"{args.warmup} warm-up; other processes share this machine, so expect noise.", flush=True)
    header = f"{'arch':<12} {'pass':<17} {'ref s':>8} {'jit s':>8} {'speedup':>8} {'ref MB':>8} {'jit MB':>8}"
    print(header)
    print("-" * len(header), flush=True)
    for arch in args.archs.split(","):
        for pass_ in args.passes.split(","):
            backends = args.backends.split(",")
            ref = run_case(args, arch, pass_, "ref") if "ref" in backends else None
            jit = run_case(args, arch, pass_, "jit") if "jit" in backends else None
            speedup = "n/a"
            if ref and jit:
                speedup = f"{statistics.median(ref['times']) / statistics.median(jit['times']):.2f}x"
            print(f"{ARCHS[arch][0]:<12} {PASSES[pass_]:<17} {_cell(ref, 'time', '.2f'):>8} "
                  f"{_cell(jit, 'time', '.2f'):>8} {speedup:>8} {_cell(ref, 'peak_mb', '.0f'):>8} "
                  f"{_cell(jit, 'peak_mb', '.0f'):>8}", flush=True)


if __name__ == "__main__":
    main()
