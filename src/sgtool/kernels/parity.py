"""The one-time check a kernel build must pass on a device before it is used there.

Small random inputs covering the cases the generators hit (separable and 2-D filters, up/down 2,
clamp, bias), forward outputs and input/bias gradients, compared with the reference ops on the
same device in float32.
"""

from __future__ import annotations

import torch

from . import jit_ops, ref

# float32, relative to the largest reference magnitude; loose enough for GPU summation order.
TOLERANCE = 1e-4


def _close(name, got, want, failures):
    scale = max(float(want.abs().max()), 1.0)
    err = float((got - want).abs().max()) / scale
    if not err <= TOLERANCE:  # also catches NaN
        failures.append(f"{name}: relative error {err:.2e}")
    return err


def _compare(name, run_ref, run_jit, inputs, failures, errors):
    outs = []
    for run in (run_ref, run_jit):
        leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
        out = run(*leaves)
        grad_out = torch.linspace(-1, 1, out.numel(), device=out.device, dtype=out.dtype).reshape(out.shape)
        grads = torch.autograd.grad(out, leaves, grad_out)
        outs.append((out.detach(), grads))
    (ref_out, ref_grads), (jit_out, jit_grads) = outs
    errors[name] = _close(f"{name} forward", jit_out, ref_out, failures)
    for i, (g_jit, g_ref) in enumerate(zip(jit_grads, ref_grads)):
        errors[f"{name} grad{i}"] = _close(f"{name} gradient {i}", g_jit, g_ref, failures)


def parity_check(module, device: torch.device) -> dict:
    gen = torch.Generator().manual_seed(1234)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device)

    failures: list[str] = []
    errors: dict[str, float] = {}
    x = rand(2, 3, 9, 11)
    b = rand(3)
    f1 = ref.setup_filter(torch.rand(8, generator=gen).tolist(), separable=True).to(device)
    f2 = ref.setup_filter(torch.rand(4, generator=gen).tolist()).to(device)

    _compare("bias_act", lambda x, b: ref.bias_act(x, b, act="lrelu", clamp=1.5),
             lambda x, b: jit_ops.bias_act(module, x, b, act="lrelu", clamp=1.5), [x, b], failures, errors)
    _compare("upfirdn2d up", lambda x: ref.upfirdn2d(x, f1, up=2, padding=[3, 4, 2, 5], gain=4),
             lambda x: jit_ops.upfirdn2d(module, x, f1, up=2, padding=[3, 4, 2, 5], gain=4), [x], failures, errors)
    _compare("upfirdn2d down", lambda x: ref.upfirdn2d(x, f2, down=2, padding=[1, -1, 2, 0], flip_filter=True),
             lambda x: jit_ops.upfirdn2d(module, x, f2, down=2, padding=[1, -1, 2, 0], flip_filter=True), [x],
             failures, errors)
    args = dict(up=2, down=2, padding=[5, 6, 4, 7], clamp=0.8)
    _compare("filtered_lrelu", lambda x, b: ref.filtered_lrelu(x, f1, f2, b, **args),
             lambda x, b: jit_ops.filtered_lrelu(module, x, f1, f2, b, **args), [x, b], failures, errors)
    return {"passed": not failures, "failures": failures, "errors": errors, "device": str(device)}
