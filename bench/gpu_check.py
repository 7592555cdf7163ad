"""`make gpu-check`: everything a lent GPU should tell us, in one run of a few minutes.

1. builds the CUDA kernels (timed, build folder reported);
2. op parity, JIT against the reference ops on the same device, forward and input/bias gradients, for every
   op call (shape, up/down, padding, flip, gain, clamp, activation) that the generators below make;
3. synthesis parity JIT vs reference for StyleGAN3-T, StyleGAN3-R and StyleGAN2 at 1024 px, float32 and with
   NVIDIA's fp16 layers (`force_fp32=False`), the errors measured against the float32 reference;
4. timings (median after warm-up, CUDA synchronised): synthesis forward and forward+backward for both op
   backends at batch 1 and 8, one PTI step, ReStyle-pSp inversion images per second at batch 8, peak memory;
5. writes gpu_check.json and prints the table. Random weights throughout (no downloads); nothing else changes.

Without CUDA it says so and exits 2. `--device cpu --resolution 64` runs the same steps on the CPU with small
networks (what the test suite does); exit 1 when a parity check fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from sgtool import kernels
from sgtool.kernels import conv as kernel_conv
from sgtool.kernels import jit, jit_ops, parity, ref
from sgtool.models import build_generator

ARCHS = ("stylegan3-t", "stylegan3-r", "stylegan2")
# fp16 layers against the float32 reference, relative to its largest value: NVIDIA's own fp16 renders differ
# from its fp32 ones by about this much (measured here; a broken fp16 path is off by far more).
FP16_TOLERANCE = 5e-2


def generator_config(arch: str, resolution: int, small: bool) -> tuple[str, dict]:
    """NVIDIA's configurations for `arch` (channel widths cut down with `small`)."""
    wide = {"stylegan3-r": (65536, 1024)}.get(arch, (32768, 512))
    channel_base, channel_max = (2048, 32) if small else wide
    common = dict(z_dim=512, w_dim=512, c_dim=0, img_resolution=resolution, img_channels=3,
                  channel_base=channel_base, channel_max=channel_max)
    if arch == "stylegan2":
        return "stylegan2", {**common, "mapping_kwargs": {"num_layers": 8}}
    extra = {"conv_kernel": 1, "use_radial_filters": True} if arch == "stylegan3-r" else {}
    return "stylegan3", {**common, **extra, "mapping_kwargs": {"num_layers": 2}}


def make_generator(arch: str, resolution: int, small: bool, device: torch.device):
    kind, config = generator_config(arch, resolution, small)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        generator = build_generator(kind, config)
    return generator.to(device).eval().requires_grad_(False)


def sample_ws(generator, batch: int, seed: int = 0) -> torch.Tensor:
    device = next(generator.parameters()).device
    z = torch.randn(batch, generator.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    with torch.no_grad():
        return generator.mapping(z, None, truncation_psi=0.7)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up (kernel builds, cuDNN autotuning)
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory(fn, device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return int(torch.cuda.max_memory_allocated(device))


# --- 1. build ------------------------------------------------------------------------------------

def build_kernels(device: torch.device) -> dict:
    start = time.perf_counter()
    facts = jit.describe(device, build=True)
    return {**facts, "seconds": round(time.perf_counter() - start, 2)}


# --- 2. op parity on the generators' own calls ---------------------------------------------------

def _scalars(kwargs: dict) -> dict:
    out = {}
    for key, value in kwargs.items():
        if isinstance(value, torch.Tensor):
            out[key] = list(value.shape)
        elif isinstance(value, (list, tuple)):
            out[key] = list(value)
        else:
            out[key] = value
    return out


def record_op_calls(generator, ws: torch.Tensor) -> list[dict]:
    """Every distinct (op, input shape, arguments) one synthesis makes, with its filters and bias shapes."""
    seen: dict[str, dict] = {}
    originals = {name: getattr(kernels, name) for name in ("bias_act", "upfirdn2d", "filtered_lrelu")}
    conv_upfirdn2d = kernel_conv.upfirdn2d

    def recorder(name, original):
        def call(x, *args, **kwargs):
            names = {"bias_act": ("b",), "upfirdn2d": ("f",), "filtered_lrelu": ("fu", "fd", "b")}[name]
            bound = dict(zip(names, args))
            bound.update(kwargs)
            key = json.dumps([name, list(x.shape), _scalars(bound)], sort_keys=True, default=str)
            seen.setdefault(key, {"op": name, "shape": list(x.shape), "tensors": {
                k: v.detach().clone() for k, v in bound.items() if isinstance(v, torch.Tensor)},
                "args": {k: v for k, v in bound.items() if not isinstance(v, torch.Tensor)}})
            return original(x, *args, **kwargs)
        return call

    try:
        for name, original in originals.items():
            setattr(kernels, name, recorder(name, original))
        kernel_conv.upfirdn2d = recorder("upfirdn2d", conv_upfirdn2d)
        with kernels.use("ref"), torch.no_grad():
            generator.synthesis(ws, noise_mode="const")
    finally:
        for name, original in originals.items():
            setattr(kernels, name, original)
        kernel_conv.upfirdn2d = conv_upfirdn2d
    return list(seen.values())


def op_parity(module, calls: list[dict], device: torch.device) -> list[dict]:
    """Each recorded call on a random input of its shape (batch 1): JIT vs reference, forward and gradients."""
    rows = []
    gen = torch.Generator().manual_seed(7)
    for call in calls:
        shape = [1, *call["shape"][1:]]
        x = torch.randn(shape, generator=gen).to(device)
        filters = {k: v.to(device) for k, v in call["tensors"].items() if k != "b"}
        bias = call["tensors"].get("b")
        inputs = [x] + ([torch.randn(bias.shape, generator=gen).to(device)] if bias is not None else [])
        op, args = call["op"], call["args"]
        reference = getattr(ref, op)
        compiled = getattr(jit_ops, op)

        def run(fn, *leaves, first=None):
            kwargs = {**args, **filters}
            if bias is not None:
                kwargs["b"] = leaves[1]
            return fn(leaves[0], **kwargs) if first is None else fn(first, leaves[0], **kwargs)

        failures: list[str] = []
        errors: dict[str, float] = {}
        parity._compare(op, lambda *leaves: run(reference, *leaves),
                        lambda *leaves: run(compiled, *leaves, first=module), inputs, failures, errors)
        rows.append({"op": op, "shape": shape, "args": _scalars({**args, **call["tensors"]}),
                     "max_error": max(errors.values()), "passed": not failures, "failures": failures})
    return rows


# --- 3. synthesis parity -------------------------------------------------------------------------

def synthesis_parity(generator, ws: torch.Tensor) -> dict:
    scale = None
    results = {}
    with torch.no_grad():
        with kernels.use("ref"):
            reference = generator.synthesis(ws, noise_mode="const")
        scale = max(float(reference.abs().max()), 1.0)
        for name, backend, fp32 in (("jit fp32", "jit", True), ("ref fp16", "ref", False),
                                    ("jit fp16", "jit", False)):
            with kernels.use(backend):
                image = generator.synthesis(ws, noise_mode="const", force_fp32=fp32)
            results[name] = float((image.float() - reference).abs().max()) / scale
    return {"relative_error": results, "fp32_passed": results["jit fp32"] <= parity.TOLERANCE * 10,
            "fp16_passed": max(results["ref fp16"], results["jit fp16"]) <= FP16_TOLERANCE}


# --- 4. timings ----------------------------------------------------------------------------------

def synthesis_timings(generator, device: torch.device, batches, repeats: int) -> list[dict]:
    rows = []
    for batch in batches:
        ws = sample_ws(generator, batch)
        for backend in ("ref", "jit"):
            def forward():
                with torch.no_grad():
                    generator.synthesis(ws, noise_mode="const")

            def forward_backward():
                leaf = ws.detach().clone().requires_grad_(True)
                generator.synthesis(leaf, noise_mode="const").square().mean().backward()

            with kernels.use(backend):
                rows.append({"batch": batch, "backend": backend,
                             "forward_s": median_time(forward, device, repeats),
                             "forward_backward_s": median_time(forward_backward, device, repeats),
                             "peak_bytes": peak_memory(forward_backward, device)})
    return rows


def pti_step_timing(generator, device: torch.device, repeats: int) -> dict:
    from sgtool.pipelines.tune.pti import PivotalTuner, TuneTarget
    from sgtool.settings import PtiOptions

    resolution = generator.img_resolution
    target = TuneTarget("t", torch.zeros(3, resolution, resolution), sample_ws(generator, 1)[0].cpu())
    # LPIPS with a random backbone: the same computation as with ImageNet weights, no download.
    tuner = PivotalTuner(generator, [target], PtiOptions(steps=10_000, lpips_random_backbone=True), device=device)
    return {"step_s": median_time(tuner.step, device, repeats), "peak_bytes": peak_memory(tuner.step, device)}


def encoder_timing(generator, device: torch.device, batch: int, repeats: int) -> dict:
    """ReStyle-pSp (random weights, the released layout) over `generator`: images per second."""
    from sgtool.models.encoders.restyle import RESTYLE_ENCODERS
    from sgtool.pipelines.invert import load_encoder

    _, encoder_cls = RESTYLE_ENCODERS["BackboneEncoder"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = encoder_cls(n_styles=generator.num_ws, input_nc=6)
    state = {f"encoder.{k}": v for k, v in module.state_dict().items()}
    state.update({f"decoder.{k}": v.cpu() for k, v in generator.state_dict().items()})
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "restyle_psp.pt"
        torch.save({"state_dict": state, "latent_avg": generator.mapping.w_avg.cpu().clone(),
                    "opts": {"encoder_type": "BackboneEncoder", "input_nc": 6, "n_iters_per_batch": 3,
                             "output_size": generator.img_resolution}}, path)
        inverter = load_encoder(path, device=device)
    images = torch.zeros(batch, 3, 256, 256, device=device)
    with torch.no_grad():
        seconds = median_time(lambda: inverter.invert(images, steps=3), device, repeats)
        memory = peak_memory(lambda: inverter.invert(images, steps=3), device)
    return {"batch": batch, "steps": 3, "images_per_s": batch / seconds, "peak_bytes": memory}


# --- the run ------------------------------------------------------------------------------------

def run_check(device: torch.device, resolution: int = 1024, small: bool = False, batches=(1, 8),
              repeats: int = 5, encoder_batch: int = 8, archs=ARCHS) -> dict:
    report: dict = {"device": str(device), "torch": torch.__version__, "resolution": resolution, "small": small}
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
    report["build"] = build_kernels(device)
    variant = jit.get_variant(device, build=False)
    module = variant.module if variant is not None else None
    report["ops"], report["synthesis"], report["timings"] = [], {}, {}
    for arch in archs:
        generator = make_generator(arch, resolution, small, device)
        ws = sample_ws(generator, 2)
        if module is not None:
            report["ops"] += [{**row, "arch": arch} for row in op_parity(module, record_op_calls(generator, ws),
                                                                         device)]
        report["synthesis"][arch] = synthesis_parity(generator, ws)
        report["timings"][arch] = synthesis_timings(generator, device, batches, repeats)
        if arch == "stylegan3-r":
            report["pti_step"] = pti_step_timing(generator, device, repeats)
            report["encoder"] = encoder_timing(generator, device, encoder_batch, repeats)
        del generator
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report["passed"] = (module is not None and all(row["passed"] for row in report["ops"])
                        and all(s["fp32_passed"] and s["fp16_passed"] for s in report["synthesis"].values()))
    return report


def table(report: dict) -> str:
    lines = [f"device {report['device']} {report.get('gpu', '')}  kernels built: {report['build'].get('built')} "
             f"in {report['build']['seconds']} s ({report['build']['cache_dir']})",
             f"op parity: {sum(r['passed'] for r in report['ops'])}/{len(report['ops'])} calls pass"
             + (f", worst {max(r['max_error'] for r in report['ops']):.1e}" if report["ops"] else " (not built)")]
    for arch, result in report["synthesis"].items():
        errors = ", ".join(f"{k} {v:.1e}" for k, v in result["relative_error"].items())
        lines.append(f"{arch} synthesis vs ref fp32: {errors}")
    lines.append(f"{'arch':<12} {'batch':>5} {'backend':>7} {'fwd s':>9} {'fwd+bwd s':>10} {'peak MiB':>9} "
                 f"{'ref/jit fwd':>11}")
    for arch, rows in report["timings"].items():
        by = {(r["batch"], r["backend"]): r for r in rows}
        for row in rows:
            ratio = by[(row["batch"], "ref")]["forward_s"] / row["forward_s"]
            peak = f"{row['peak_bytes'] / 2 ** 20:.0f}" if row["peak_bytes"] is not None else "-"
            lines.append(f"{arch:<12} {row['batch']:>5} {row['backend']:>7} {row['forward_s']:>9.4f} "
                         f"{row['forward_backward_s']:>10.4f} {peak:>9} {ratio:>11.2f}")
    if "pti_step" in report:
        lines.append(f"PTI step (stylegan3-r): {report['pti_step']['step_s']:.4f} s")
        lines.append(f"ReStyle-pSp inversion: {report['encoder']['images_per_s']:.1f} images/s at batch "
                     f"{report['encoder']['batch']}")
    lines.append("PASSED" if report["passed"] else "FAILED")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--small", action="store_true", help="narrow networks (CPU runs)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="gpu_check.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here (torch.cuda.is_available() is False); run make gpu-check on a machine "
              "with an NVIDIA GPU, or pass --device cpu --small for the CPU version", file=sys.stderr)
        return 2
    batches = (1, 8) if device.type == "cuda" else (1, 2)
    report = run_check(device, args.resolution, args.small, batches, args.repeats,
                       encoder_batch=8 if device.type == "cuda" else 2)
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    print(table(report))
    print(f"wrote {args.out}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
