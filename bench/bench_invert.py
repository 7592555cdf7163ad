"""Seconds per image for `sgtool invert`'s methods, reference vs JIT kernels (when that backend exists).

Golden sizes: the ReStyle-pSp fixture (IR-SE50 encoder, 512 px StyleGAN3 decoder) for the encoder
and hybrid methods, the 64 px golden StyleGAN3-T for projection. Full size: a random-weight 1024 px
stylegan3-r generator with a random ReStyle-pSp encoder. Optimisation runs few steps; the table
gives the measured time per step and the time per image extrapolated to the default step count.
Set BENCH_INVERT_SKIP_1024=1 to leave out the (slow on CPU) 1024 px rows.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sgtool import kernels  # noqa: E402
from sgtool.losses import load_lpips  # noqa: E402
from sgtool.models import ARCH_PRESETS, build_generator, load_generator  # noqa: E402
from sgtool.models.encoders import BackboneEncoder, ReStyleInverter  # noqa: E402
from sgtool.pipelines.invert import invert_target, load_encoder, render  # noqa: E402
from sgtool.settings import InvertSettings  # noqa: E402
from timing import median_seconds  # noqa: E402

GOLDEN = (ROOT / ".." / "shared" / "golden").resolve()
DEFAULT_STEPS = InvertSettings().project_steps


def backends():
    return ["ref", "jit"] if "jit" in kernels.BACKENDS else ["ref"]


def target_for(G, seed=1):
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).to(torch.float32)
    with torch.no_grad():
        return render(G, G.mapping(z, None))[0]


def cases():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        lpips_model = load_lpips("vgg", random_backbone=True)
    enc = load_encoder(GOLDEN / "encoders" / "BackboneEncoder_ckpt.pt")
    x = torch.from_numpy(np.load(GOLDEN / "encoders" / "BackboneEncoder_io.npz")["x"][:1])
    g64 = load_generator(GOLDEN / "generators" / "sg3t_64.pkl")
    t64 = target_for(g64)
    t512 = target_for(enc.generator)
    yield ("encoder, 3 steps", "golden pSp / 512 px", 3, lambda: enc.invert(x, steps=3), 1, 3)
    yield ("optimize, 10 steps", "golden sg3t 64 px", 10,
           lambda: invert_target(t64, "optimize", generator=g64, num_steps=10, lpips_model=lpips_model,
                                 projector={"w_avg_samples": 1000}), DEFAULT_STEPS / 10, 3)
    yield ("hybrid, 3 enc + 2 opt", "golden pSp / 512 px", 2,
           lambda: invert_target(t512, "hybrid", encoder=enc, steps=3, num_steps=2, lpips_model=lpips_model,
                                 projector={"w_avg_samples": 1000}), None, 1)
    if os.environ.get("BENCH_INVERT_SKIP_1024"):
        return
    G = build_generator("stylegan3", dict(ARCH_PRESETS["stylegan3-r"], z_dim=512, c_dim=0, w_dim=512,
                                          img_resolution=1024, img_channels=3)).eval().requires_grad_(False)
    big_enc = ReStyleInverter(BackboneEncoder(n_styles=16, input_nc=6).eval(), G, G.mapping.w_avg, "psp",
                              "BackboneEncoder", default_steps=1).eval().requires_grad_(False)
    t1024 = target_for(G)
    yield ("encoder, 1 step", "random sg3-r 1024 px", 1, lambda: big_enc.invert(x, steps=1), 1, 1)
    yield ("optimize, 1 step", "random sg3-r 1024 px", 1,
           lambda: invert_target(t1024, "optimize", generator=G, num_steps=1, lpips_model=lpips_model,
                                 projector={"w_avg_samples": 1000}), DEFAULT_STEPS, 1)


def main():
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    print(f"device cpu, {torch.get_num_threads()} threads; kernel backends measured: {', '.join(backends())}"
          + ("" if "jit" in kernels.BACKENDS else " (no JIT backend in this build)"))
    header = f"{'method':24s} {'model':22s} {'backend':7s} {'s/run':>9s} {'s/image':>9s} {'vs ref':>7s}"
    print(header)
    print("-" * len(header))
    for label, model, _, fn, scale, repeats in cases():
        ref_time = None
        for backend in backends():
            with kernels.use(backend):
                if repeats > 1:
                    fn()  # warm-up: JIT build/vetting, allocator, caches
                seconds = median_seconds(fn, repeats)
            ref_time = seconds if backend == "ref" else ref_time
            per_image = f"{seconds * scale:9.2f}" if scale is not None else f"{seconds:9.2f}"
            ratio = f"{seconds / ref_time:7.2f}" if ref_time else "      -"
            print(f"{label:24s} {model:22s} {backend:7s} {seconds:9.3f} {per_image} {ratio}", flush=True)
    print(f"s/image for optimize = measured time per step x {DEFAULT_STEPS} default steps (--num-steps).")


if __name__ == "__main__":
    main()
