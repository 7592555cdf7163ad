"""Compiled CPU kernels against the reference ops: forward and gradients, many argument combinations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from support.golden import GENERATOR_FIXTURES, golden_dir
from sgtool import kernels
from sgtool.kernels import jit, jit_ops, ref
from sgtool.models import load_generator

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


@pytest.fixture(scope="session")
def cpu_kernels():
    variant = jit.get_variant(torch.device("cpu"))
    assert variant.ready, f"CPU kernels unusable: {variant.error}"
    return variant.module


def rel_err(got, want):
    return float((got - want).abs().max()) / max(float(want.abs().max()), 1e-30)


def check(run_ref, run_jit, inputs, dtype):
    """Forward and input gradients of both paths agree within the dtype's tolerance."""
    results = []
    for run in (run_ref, run_jit):
        leaves = [t.to(dtype).detach().clone().requires_grad_(True) for t in inputs]
        out = run(*leaves)
        weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=dtype)
        grads = torch.autograd.grad((out * weight).sum(), leaves)
        results.append((out.detach(), grads))
    (ref_out, ref_grads), (jit_out, jit_grads) = results
    assert jit_out.shape == ref_out.shape and jit_out.dtype == ref_out.dtype
    assert rel_err(jit_out, ref_out) <= TOL[dtype]
    for g_jit, g_ref in zip(jit_grads, ref_grads):
        assert g_jit.shape == g_ref.shape
        assert rel_err(g_jit, g_ref) <= TOL[dtype]


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


FILTERS = {
    "none": None,
    "box2": ref.setup_filter([1, 1]),  # 2-D outer product, even taps
    "binomial4": ref.setup_filter([1, 3, 3, 1]),
    "separable7": ref.setup_filter([1, 2, 5, 3, 4, 1, 2], separable=True),  # odd length, asymmetric
    "separable12": ref.setup_filter(np.hanning(14)[1:-1], separable=True),
    "radial6x6": torch.from_numpy(np.outer(np.arange(1, 7), np.arange(6, 0, -1)) % 5 + 1.0).float(),
    "rect3x5": torch.arange(15, dtype=torch.float32).reshape(3, 5) / 50 + 0.1,
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fname", list(FILTERS))
@pytest.mark.parametrize("up,down,padding", [
    (1, 1, 0), (2, 1, [3, 2, 1, 4]), (1, 2, [1, 2, 2, 1]), (4, 1, 5), (1, 4, [2, 1]), (2, 2, [-1, 3, 2, -2]),
    ([2, 1], [1, 2], [1, 1, 2, 2]), (4, 2, [4, 3, -2, 5]),
])
def test_upfirdn2d_matches_reference(cpu_kernels, dtype, fname, up, down, padding):
    f = FILTERS[fname]
    x = randn(2, 5, 15, 13)
    for flip, gain in ((False, 1), (True, 3.5)):
        args = dict(up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
        check(lambda x: ref.upfirdn2d(x, f, **args), lambda x: jit_ops.upfirdn2d(cpu_kernels, x, f, **args), [x], dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fu,fd,up,down,padding", [
    ("separable12", "separable12", 2, 2, [11, 10, 12, 9]),  # StyleGAN3-T hidden layer
    ("separable12", "radial6x6", 2, 2, [7, 6, 5, 8]),  # StyleGAN3-R: 2-D radial down filter
    ("separable7", None, 4, 1, [3, 4, 5, 2]),
    (None, "binomial4", 1, 2, [1, 2, 0, 3]),
    (None, None, 1, 1, [-1, 0, 2, -2]),  # toRGB: no filters, negative padding
    ("rect3x5", "separable7", 2, 4, [6, 3, 4, 5]),
])
def test_filtered_lrelu_matches_reference(cpu_kernels, dtype, fu, fd, up, down, padding):
    fu, fd = FILTERS.get(fu), FILTERS.get(fd)
    x, b = randn(2, 5, 13, 10, seed=1) * 2, randn(5, seed=2)
    for gain, slope, clamp, flip in ((2 ** 0.5, 0.2, None, False), (1.0, 1.0, 0.7, True), (1.7, 0.05, 2.5, False)):
        args = dict(up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp, flip_filter=flip)
        check(lambda x, b: ref.filtered_lrelu(x, fu, fd, b, **args),
              lambda x, b: jit_ops.filtered_lrelu(cpu_kernels, x, fu, fd, b, **args), [x, b], dtype)


def test_filtered_lrelu_keeps_two_bit_codes_for_backward(cpu_kernels):
    """What a backward without activation checkpointing keeps per layer: a quarter byte per upsampled sample."""
    fu, fd = FILTERS["separable12"], FILTERS["radial6x6"]
    x = randn(2, 5, 13, 10, seed=1).float().requires_grad_(True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        jit_ops.filtered_lrelu(cpu_kernels, x, fu, fd, None, up=2, down=2, padding=[7, 6, 5, 8])
    # Upsampled plane: 13 * 2 + 5 + 8 - 11 = 28 rows, 10 * 2 + 7 + 6 - 11 = 22 columns, packed 4 to a byte.
    assert [tuple(t.shape) for t in saved if t.dtype == torch.uint8] == [(2, 5, 28, 6)]
    assert all(t.dtype == torch.uint8 for t in saved)  # nothing float-sized besides


def test_filtered_lrelu_takes_bfloat16_as_it_is_under_autocast(cpu_kernels, monkeypatch):
    """bf16 PTI: the CPU kernel reads the matmul's bf16 output and writes bf16 (computing in float32), no casts."""
    from sgtool.kernels import dispatch

    fu, fd = FILTERS["separable12"], FILTERS["radial6x6"]
    x, b = (randn(2, 5, 13, 10, seed=1) * 2).bfloat16(), randn(5, seed=2).bfloat16()
    args = dict(up=2, down=2, padding=[7, 6, 5, 8], clamp=0.8)
    want_x = x.float().requires_grad_(True)
    want = ref.filtered_lrelu(want_x, fu, fd, b.float(), **args)
    monkeypatch.setattr(dispatch.ref, "filtered_lrelu", None)  # the reference must not run
    got_x = x.clone().requires_grad_(True)
    with kernels.use("jit"), torch.autocast("cpu", dtype=torch.bfloat16):
        got = kernels.filtered_lrelu(got_x, fu, fd, b, **args)
    assert got.dtype == torch.bfloat16
    assert rel_err(got.detach().float(), want.detach()) < 8e-3  # bfloat16's rounding of the output
    grad = torch.randn(got.shape, generator=torch.Generator().manual_seed(3)).bfloat16()
    (got_dx,), (want_dx,) = torch.autograd.grad(got, got_x, grad), torch.autograd.grad(want, want_x, grad.float())
    assert got_dx.dtype == torch.bfloat16 and rel_err(got_dx.float(), want_dx) < 8e-3


def test_filtered_lrelu_without_bias(cpu_kernels):
    f = FILTERS["separable7"]
    args = dict(up=2, down=2, padding=[4, 4, 5, 3], clamp=0.5)
    check(lambda x: ref.filtered_lrelu(x, f, f, None, **args),
          lambda x: jit_ops.filtered_lrelu(cpu_kernels, x, f, f, None, **args), [randn(1, 3, 8, 8)], torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("act", list(ref.ACTIVATIONS))
def test_bias_act_matches_reference(cpu_kernels, dtype, act):
    x = randn(3, 7, 5, 4) * 3
    for dim, b, kwargs in ((1, randn(7, seed=3), {}), (3, randn(4, seed=4), {"gain": 0.7, "clamp": 1.1}),
                           (2, None, {"alpha": 0.3})):
        inputs = [x] if b is None else [x, b]
        check(lambda *t: ref.bias_act(t[0], t[1] if len(t) > 1 else None, dim=dim, act=act, **kwargs),
              lambda *t: jit_ops.bias_act(cpu_kernels, t[0], t[1] if len(t) > 1 else None, dim=dim, act=act,
                                          **kwargs), inputs, dtype)


def test_bias_act_on_fully_connected_output(cpu_kernels):
    x, b = randn(4, 33), randn(33, seed=5)
    check(lambda x, b: ref.bias_act(x, b, act="lrelu"), lambda x, b: jit_ops.bias_act(cpu_kernels, x, b, act="lrelu"),
          [x, b], torch.float32)


def test_upfirdn2d_second_order_gradient(cpu_kernels):
    f = FILTERS["binomial4"]
    results = []
    for op in (ref.upfirdn2d, lambda *a, **k: jit_ops.upfirdn2d(cpu_kernels, *a, **k)):
        x = randn(1, 2, 6, 7).requires_grad_(True)
        (g,) = torch.autograd.grad(op(x, f, up=2, padding=2).pow(3).sum(), x, create_graph=True)
        (gg,) = torch.autograd.grad(g.square().sum(), x)
        results.append(gg)
    assert rel_err(results[1], results[0]) <= 1e-12


def test_dispatch_selects_backend(cpu_kernels, monkeypatch):
    calls = []
    monkeypatch.setattr(jit_ops, "filtered_lrelu", lambda *a, **k: calls.append("jit") or ref.filtered_lrelu(*a[1:], **k))
    x = randn(1, 2, 8, 8).float()
    with kernels.use("ref"):
        kernels.filtered_lrelu(x, None, None, up=1, down=1)
    assert calls == []
    with kernels.use("jit"):
        kernels.filtered_lrelu(x, None, None, up=1, down=1)
    assert calls == ["jit"]
    assert kernels.current_backend() == "auto"
    with pytest.raises(ValueError, match="unknown kernel backend"):
        with kernels.use("fast"):
            pass


def test_unsupported_dtype_falls_back_to_reference(cpu_kernels):
    x = randn(1, 2, 6, 6).to(torch.bfloat16)
    with kernels.use("jit"), pytest.warns(RuntimeWarning, match="not compiled"):
        y = kernels.upfirdn2d(x, FILTERS["binomial4"], up=2, padding=2)
    assert torch.equal(y, ref.upfirdn2d(x, FILTERS["binomial4"], up=2, padding=2))


@pytest.mark.parametrize("name", GENERATOR_FIXTURES)
def test_generator_with_jit_kernels_matches_golden(cpu_kernels, name):
    folder = golden_dir("generators")
    io = np.load(folder / f"{name}_io.npz")
    G = load_generator(folder / f"{name}.pkl")
    ws = torch.from_numpy(io["ws"])
    with torch.no_grad(), kernels.use("jit"):
        img = G.synthesis(ws, noise_mode="const")
    assert (img - torch.from_numpy(io["img"])).abs().max() <= 1e-4


def test_generator_gradients_with_jit_kernels(cpu_kernels):
    """What PTI trains: gradients w.r.t. ws and every generator weight match the reference path."""
    G = load_generator(golden_dir("generators") / "sg3r_64.pkl")
    G.requires_grad_(True)
    ws = torch.from_numpy(np.load(golden_dir("generators") / "sg3r_64_io.npz")["ws"][:2]).requires_grad_(True)
    grads = {}
    for backend in ("ref", "jit"):
        with kernels.use(backend):
            loss = G.synthesis(ws).square().mean()
        params = [ws] + list(G.synthesis.parameters())
        grads[backend] = torch.autograd.grad(loss, params, allow_unused=True)
    assert sum(g is not None for g in grads["ref"]) > 10
    for g_jit, g_ref in zip(grads["jit"], grads["ref"]):
        assert (g_jit is None) == (g_ref is None)
        if g_ref is None:
            continue
        assert float((g_jit - g_ref).abs().max()) <= 1e-5 * max(float(g_ref.abs().max()), 1e-8) + 1e-9
