"""PTI in bfloat16 (`--precision bf16`): the path is taken where the CPU has the instructions, falls back with one
warning where it has not, and ends where float32 ends."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import skimage.data
import torch

from sgtool import device as devices
from sgtool import kernels
from sgtool.models import load_generator
from sgtool.pipelines.shared.images import generator_target
from sgtool.pipelines.tune.pti import PivotalTuner, TuneTarget
from sgtool.settings import PtiOptions
from support.golden import golden_dir

CPU = torch.device("cpu")


def tuner(name, precision, steps=350, seed_latent=0):
    G = load_generator(golden_dir("generators", f"{name}.pkl"))
    io = np.load(golden_dir("generators", f"{name}_io.npz"))
    photo = generator_target(skimage.data.astronaut(), G.img_resolution)  # a real photo squeezed to 64 px
    target = TuneTarget("astronaut", photo, torch.from_numpy(io["ws"][seed_latent]))
    options = PtiOptions(steps=steps, lpips_random_backbone=True, precision=precision, lpips_threshold=0.0)
    return PivotalTuner(G, [target], options, device=CPU)


def conv_output_dtypes(run):
    seen = []
    original = kernels.modulated_conv2d_sg3

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append(out.dtype)
        return out

    kernels.modulated_conv2d_sg3 = recording
    try:
        run()
    finally:
        kernels.modulated_conv2d_sg3 = original
    return set(seen)


@pytest.mark.skipif(devices.bf16_support(CPU) is not None, reason="needs a CPU with AVX512-BF16 or AMX: "
                    "the fallback test below covers the others")
def test_bf16_is_taken_where_the_cpu_has_it():
    fast = tuner("sg3t_64", "bf16", steps=1)
    assert fast.precision == "bf16"
    assert tuner("sg3t_64", "auto", steps=1).precision == ("bf16" if "amx_bf16" in devices.cpu_flags() else "fp32")
    assert conv_output_dtypes(fast.step) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in fast.params)  # weights and Adam state stay float32
    assert conv_output_dtypes(tuner("sg3t_64", "fp32", steps=1).step) == {torch.float32}


@pytest.mark.parametrize("flags,auto", [({"avx512_bf16", "amx_bf16"}, "bf16"), ({"avx512_bf16"}, "fp32"),
                                        ({"avx2"}, "fp32")])
def test_auto_takes_bf16_where_it_measured_faster(monkeypatch, flags, auto):
    """PTI's default: bf16 with AMX (measured faster for all three architectures), float32 with AVX512-BF16 alone
    (unmeasured) and without either; never a warning."""
    monkeypatch.setattr(devices, "cpu_flags", lambda: flags)
    assert PtiOptions().precision == "auto"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert devices.resolve_precision("auto", CPU) == auto
        if flags != {"avx2"}:
            assert devices.resolve_precision("bf16", CPU) == "bf16"  # asked for: taken wherever the instructions are


def test_without_the_instructions_bf16_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(devices, "cpu_flags", lambda: {"avx2"})
    with pytest.warns(RuntimeWarning, match="neither AVX512-BF16 nor AMX; using float32"):
        slow = tuner("sg3t_64", "bf16", steps=1)
    assert slow.precision == "fp32"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tuner("sg3t_64", "auto", steps=1).precision == "fp32"  # auto says nothing
    assert conv_output_dtypes(slow.step) == {torch.float32}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sg3t_64", "sg2_64"])
def test_350_bf16_steps_end_within_2_percent_of_float32(name):
    if devices.bf16_support(CPU) is not None:
        pytest.skip("bf16 runs as float32 on this CPU: nothing to compare")
    finals = {}
    for precision in ("fp32", "bf16"):
        run = tuner(name, precision)
        for _ in range(350):
            record = run.step()
        finals[precision] = record
    for key in ("mse", "lpips"):
        assert abs(finals["bf16"][key] - finals["fp32"][key]) <= 0.02 * finals["fp32"][key], (key, finals)


# ----------------------------------------------------------------------------------------------------------
# Projection (invert --method optimize|hybrid, tune's pivots): the same switch, `projector.precision`.


def projection(precision, steps=2):
    """The projection's steps alone (invert_target's final render after them is float32 on purpose)."""
    from sgtool.losses import load_lpips
    from sgtool.pipelines.invert.project import project
    from sgtool.settings import Projector

    G = load_generator(golden_dir("generators", "sg3t_64.pkl"))
    photo = generator_target(skimage.data.astronaut(), G.img_resolution)
    lpips_model = load_lpips("vgg", CPU, random_backbone=True)
    return lambda: project(G, photo, num_steps=steps, lpips_model=lpips_model,
                           **Projector(precision=precision).options())


def test_projection_bf16_is_taken_where_the_cpu_has_it(monkeypatch):
    # The flags stand in for the instructions (without them torch emulates bfloat16, slowly, same dtypes).
    monkeypatch.setattr(devices, "cpu_flags", lambda: {devices.BF16_CPU_FLAGS[0]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback said
        assert conv_output_dtypes(projection("bf16", steps=1)) == {torch.bfloat16}


def test_projection_without_the_instructions_falls_back_to_float32_with_one_warning(monkeypatch):
    monkeypatch.setattr(devices, "cpu_flags", lambda: {"avx2"})
    run = projection("bf16")
    fallback = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert conv_output_dtypes(lambda: fallback.append(run())) == {torch.float32}
    said = [w for w in caught if "neither AVX512-BF16 nor AMX; using float32" in str(w.message)]
    assert len(said) == 1 and said[0].category is RuntimeWarning
    float32 = projection("fp32")()
    torch.testing.assert_close(fallback[0].latents, float32.latents, atol=0, rtol=0)  # float32 exactly
