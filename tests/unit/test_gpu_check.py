"""`make gpu-check`'s device-independent parts on the CPU, and NVIDIA's fp16 layers behind force_fp32=False."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import gpu_check  # noqa: E402

from sgtool.models import layers  # noqa: E402


def test_without_cuda_it_says_so_and_exits_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "r.json")]) == 2
    assert "no CUDA device" in capsys.readouterr().err and not (tmp_path / "r.json").exists()


def test_the_whole_check_runs_on_the_cpu_with_small_networks(tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--device", "cpu", "--resolution", "32", "--small", "--repeats", "1",
                           "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["build"]["built"] and report["passed"]
    ops = {row["op"] for row in report["ops"]}
    assert ops == {"bias_act", "upfirdn2d", "filtered_lrelu"}  # every op the generators call, each checked
    assert all(row["passed"] and row["max_error"] < 1e-4 for row in report["ops"])
    for arch in gpu_check.ARCHS:
        assert report["synthesis"][arch]["fp32_passed"]
        assert {(r["batch"], r["backend"]) for r in report["timings"][arch]} == {(1, "ref"), (1, "jit"), (2, "ref"),
                                                                                 (2, "jit")}
    assert report["pti_step"]["step_s"] > 0 and report["encoder"]["images_per_s"] > 0
    assert "PASSED" in capsys.readouterr().out


def test_recorded_calls_cover_resampling_padding_and_clamps():
    generator = gpu_check.make_generator("stylegan2", 32, True, torch.device("cpu"))
    calls = gpu_check.record_op_calls(generator, gpu_check.sample_ws(generator, 1))
    upfirdn = [c for c in calls if c["op"] == "upfirdn2d"]
    assert {c["args"].get("up", 1) for c in upfirdn} >= {2} and any("clamp" in c["args"] for c in calls)


def test_fp16_layers_run_in_float16_only_when_fp32_is_not_forced(monkeypatch):
    monkeypatch.setattr(layers, "FP16_DEVICES", ["cuda", "cpu"])  # CPU half precision stands in for CUDA here
    generator = gpu_check.make_generator("stylegan2", 32, True, torch.device("cpu"))
    ws = gpu_check.sample_ws(generator, 1)
    seen = {}
    for res in generator.synthesis.block_resolutions:
        block = getattr(generator.synthesis, f"b{res}")
        block.conv1.register_forward_pre_hook(lambda m, args, res=res: seen.__setitem__(res, args[0].dtype))
    with torch.no_grad():
        exact = generator.synthesis(ws)
        assert set(seen.values()) == {torch.float32}
        half = generator.synthesis(ws, force_fp32=False)
    marked = {res for res in generator.synthesis.block_resolutions
              if getattr(generator.synthesis, f"b{res}").use_fp16}
    assert marked and all(seen[res] == (torch.float16 if res in marked else torch.float32) for res in seen)
    assert half.dtype == torch.float32
    error = float((half - exact).abs().max() / exact.abs().max())
    assert 0 < error < gpu_check.FP16_TOLERANCE

    sg3 = gpu_check.make_generator("stylegan3-t", 32, True, torch.device("cpu"))
    first = next(layer for layer in (getattr(sg3.synthesis, name) for name in sg3.synthesis.layer_names)
                 if layer.use_fp16)  # stopped before it runs: half convolutions on a CPU take minutes
    captured = {}

    class Stop(Exception):
        pass

    def stop(module, args, kwargs):
        captured["force_fp32"] = kwargs.get("force_fp32")
        raise Stop

    first.register_forward_pre_hook(stop, with_kwargs=True)
    for force in (True, False):
        with pytest.raises(Stop), torch.no_grad():
            sg3.synthesis(gpu_check.sample_ws(sg3, 1), force_fp32=force)
        assert captured["force_fp32"] is force
    assert layers.layer_dtype(True, False, torch.device("cpu")) == torch.float16
    assert layers.layer_dtype(True, True, torch.device("cpu")) == torch.float32
    assert layers.layer_dtype(False, False, torch.device("cpu")) == torch.float32
