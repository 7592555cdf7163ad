"""StyleGAN3 synthesis on the reference ops vs the JIT-compiled kernels (CPU by default).

Each (architecture, pass, backend) case runs in its own process so its peak memory (ru_maxrss)
is its own. Random weights with the official 1024 px channel counts, batch 1. Prints the median
of --runs timed runs after --warmup untimed ones, the speedup and the peak memory of each side.

A case whose memory passes --memory-gb (default: what the machine has free, less 1.5 GB) is stopped
and shown as needing more; when that happens to the reference, the pass is measured again at half the
resolution (same channel counts) until the reference fits, so every pass gets a ratio.

The last columns compare the JIT path with the arithmetic floor: the pass's FLOPs (torch's count for
the convolutions and matmuls; filtered_lrelu's multiply-adds over nonzero taps and kept outputs, in
the cheaper pass order) divided by this machine's float32 matmul rate, measured at the start.

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
import threading
import time
from pathlib import Path

ARCHS = {
    "t": ("stylegan3-t", dict(channel_base=32768, channel_max=512, conv_kernel=3)),
    "r": ("stylegan3-r", dict(channel_base=65536, channel_max=1024, conv_kernel=1, use_radial_filters=True)),
}
PASSES = {"fwd": "forward", "fwdbwd": "forward+backward"}
OVER_BUDGET = 75  # a child's exit status when it stopped itself for memory
MIN_RESOLUTION = 64


def watch_memory(budget_mb: float) -> None:
    """Stop this process (exit OVER_BUDGET) as soon as its resident memory passes budget_mb.

    Stopping here rather than meeting the kernel's OOM killer keeps the machine usable and lets the
    parent tell "needs more memory" from a crash. Linux only; elsewhere nothing is watched."""
    statm = Path("/proc/self/statm")
    if not statm.exists():
        return
    page_mb = os.sysconf("SC_PAGE_SIZE") / 2 ** 20

    def loop():
        while True:
            if int(statm.read_text().split()[1]) * page_mb > budget_mb:
                os._exit(OVER_BUDGET)
            time.sleep(0.02)

    threading.Thread(target=loop, daemon=True).start()


def filtered_lrelu_macs(x, fu, fd, up, down, padding) -> int:
    """Multiply-adds of one filtered_lrelu over nonzero taps and kept outputs (cheaper pass order)."""
    from sgtool.kernels.ref import filter_size, parse_padding

    n, c, h, w = x.shape
    px0, px1, py0, py1 = parse_padding(padding)
    fuw, fuh = filter_size(fu)
    fdw, fdh = filter_size(fd)
    th, tw = h * up + py0 + py1 - fuh + 1, w * up + px0 + px1 - fuw + 1
    oh, ow = (th - fdh) // down + 1, (tw - fdw) // down + 1
    if fu is None:
        up_macs = 0
    elif fu.ndim == 1:
        up_macs = min(h * tw * fuw + th * tw * fuh, th * w * fuh + th * tw * fuw) / up
    else:
        up_macs = th * tw * fuh * fuw / up ** 2
    if fd is None:
        down_macs = 0
    elif fd.ndim == 1:
        down_macs = min(th * ow * fdw + oh * ow * fdh, oh * tw * fdh + oh * ow * fdw)
    else:
        down_macs = oh * ow * fdh * fdw
    return int(n * c * (up_macs + down_macs))


def count_flops(step, backward: bool) -> float:
    """FLOPs of one step: torch's count for its own ops plus filtered_lrelu's, the backward counted
    like the forward (its transposed stages touch the same taps)."""
    from torch.utils.flop_counter import FlopCounterMode

    from sgtool import kernels

    counted = {"flrelu": 0}
    plain = kernels.filtered_lrelu

    def counting(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, **kwargs):
        counted["flrelu"] += 2 * filtered_lrelu_macs(x, fu, fd, int(up), int(down), padding) * (1 + backward)
        return plain(x, fu, fd, b, up=up, down=down, padding=padding, **kwargs)

    kernels.filtered_lrelu = counting
    try:
        with FlopCounterMode(display=False) as torch_ops:
            step()
    finally:
        kernels.filtered_lrelu = plain
    return torch_ops.get_total_flops() + counted["flrelu"]


def child(arch: str, pass_: str, backend: str, resolution: int, runs: int, warmup: int, device: str,
          memory_mb: float, flops: bool) -> dict:
    watch_memory(memory_mb)
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
    result = {"times": times, "peak_mb": peak_mb, "threads": torch.get_num_threads()}
    if flops:
        result["flops"] = count_flops(step, backward)
    return result


def run_case(args, arch, pass_, backend, resolution) -> dict:
    """The child's result; {"over_budget": True} when it needed more memory; {"failed": reason} otherwise."""
    cmd = [sys.executable, __file__, "--child", arch, pass_, backend, "--resolution", str(resolution),
           "--runs", str(args.runs), "--warmup", str(args.warmup), "--device", args.device,
           "--memory-gb", str(args.memory_gb)] + (["--flops"] if backend == "jit" else [])
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode == OVER_BUDGET:
        return {"over_budget": True}
    if result.returncode != 0:
        reason = f"killed by signal {-result.returncode}" if result.returncode < 0 else \
            f"exit {result.returncode}: {result.stderr.strip().splitlines()[-1:]}"
        print(f"  ({arch}/{pass_}/{backend} at {resolution}px failed: {reason})", file=sys.stderr, flush=True)
        return {"failed": reason}
    return json.loads(result.stdout.strip().splitlines()[-1])


def matmul_gflops(seconds: float = 3.0) -> float:
    """This machine's float32 matmul rate (2048^3, all threads): the denominator of the floor."""
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    rates = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        a @ b
        rates.append(2 * 2048 ** 3 / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def available_memory_gb() -> float:
    import torch

    from sgtool.pipelines.shared.memory import available_memory

    free = available_memory(torch.device("cpu"))
    return 16.0 if free is None else free / 2 ** 30


def main(argv=None):
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=int(env("SGTOOL_BENCH_RESOLUTION", 1024)))
    parser.add_argument("--runs", type=int, default=int(env("SGTOOL_BENCH_RUNS", 5)))
    parser.add_argument("--warmup", type=int, default=int(env("SGTOOL_BENCH_WARMUP", 1)))
    parser.add_argument("--archs", default="t,r")
    parser.add_argument("--passes", default="fwd,fwdbwd")
    parser.add_argument("--backends", default="ref,jit")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory-gb", type=float, default=None,
                        help="stop a case past this resident memory (default: free memory less 1.5 GB)")
    parser.add_argument("--child", nargs=3, metavar=("ARCH", "PASS", "BACKEND"))
    parser.add_argument("--flops", action="store_true", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args(argv)  # run_all.py leaves its own arguments in sys.argv
    if args.child:
        result = child(*args.child, args.resolution, args.runs, args.warmup, args.device, args.memory_gb * 1024,
                       args.flops)
        print(json.dumps(result))
        return

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "src"))
    if args.memory_gb is None:
        args.memory_gb = round(available_memory_gb() - 1.5, 1)
    rate = matmul_gflops()
    print(f"StyleGAN3 synthesis, batch 1, {args.device}, median of {args.runs} runs after {args.warmup} warm-up; "
          f"memory budget {args.memory_gb} GB per case; float32 matmul {rate:.0f} GFLOP/s (the floor's rate).",
          flush=True)
    header = (f"{'arch':<12} {'pass':<17} {'px':>5} {'ref s':>8} {'jit s':>8} {'speedup':>8} {'ref MB':>8} "
              f"{'jit MB':>8} {'GFLOP':>7} {'floor s':>8} {'jit/floor':>9}")
    print(header)
    print("-" * len(header), flush=True)
    backends = args.backends.split(",")
    for arch in args.archs.split(","):
        for pass_ in args.passes.split(","):
            resolution = args.resolution
            while True:
                ref = run_case(args, arch, pass_, "ref", resolution) if "ref" in backends else None
                jit = run_case(args, arch, pass_, "jit", resolution) if "jit" in backends else None
                print(_row(arch, pass_, resolution, ref, jit, rate, args.memory_gb), flush=True)
                if not (ref and ref.get("over_budget")) or resolution // 2 < MIN_RESOLUTION:
                    break
                resolution //= 2


def _row(arch, pass_, resolution, ref, jit, rate, memory_gb) -> str:
    def seconds(r):
        return statistics.median(r["times"]) if r and "times" in r else None

    def cell(r, value, fmt):
        if r is None:
            return "-"
        if r.get("over_budget"):
            return f">{memory_gb:g}GB"
        if "failed" in r:
            return "failed"
        return format(value, fmt)

    ref_s, jit_s = seconds(ref), seconds(jit)
    speedup = f"{ref_s / jit_s:.2f}x" if ref_s and jit_s else "n/a"
    flops = jit.get("flops") if jit and "times" in jit else None
    gflop = f"{flops / 1e9:.0f}" if flops else "-"
    floor = flops / 1e9 / rate if flops else None
    return (f"{ARCHS[arch][0]:<12} {PASSES[pass_]:<17} {resolution:>5} {cell(ref, ref_s, '.2f'):>8} "
            f"{cell(jit, jit_s, '.2f'):>8} {speedup:>8} {cell(ref, ref and ref.get('peak_mb'), '.0f'):>8} "
            f"{cell(jit, jit and jit.get('peak_mb'), '.0f'):>8} {gflop:>7} "
            f"{format(floor, '.2f') if floor else '-':>8} {format(jit_s / floor, '.1f') + 'x' if floor else '-':>9}")


if __name__ == "__main__":
    main()
