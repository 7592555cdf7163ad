"""Building, caching, vetting and falling back: the machinery around the compiled kernels."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sgtool import kernels
from sgtool.kernels import cuda_check, jit, ref

CPU = torch.device("cpu")


@pytest.fixture
def fresh_state(monkeypatch, tmp_path):
    """An empty kernel cache and no modules loaded or warnings given yet in this process."""
    monkeypatch.setenv("SGTOOL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(jit, "_variants", {})
    monkeypatch.setattr(jit, "_warned", set())
    return tmp_path / "cache"


def test_cache_location_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SGTOOL_CACHE", str(tmp_path / "mine"))
    assert jit.cache_root() == tmp_path / "mine"
    monkeypatch.delenv("SGTOOL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert jit.cache_root() == tmp_path / "xdg" / "sgtool"


def test_build_key_depends_on_device_and_is_stable():
    cpu = jit.build_key("cpu", "x86_64-aaaa")
    assert cpu == jit.build_key("cpu", "x86_64-aaaa")
    assert cpu != jit.build_key("cpu", "x86_64-bbbb")
    assert jit.build_key("cuda", "sm_80") != jit.build_key("cuda", "sm_90")


def test_two_checkouts_or_venvs_build_into_folders_of_their_own(tmp_path, monkeypatch):
    """The build files hold the sources' and torch's absolute paths: a shared folder would rebuild in turns."""
    import shutil

    here = jit.build_key("cpu", "x86_64-aaaa")
    copy = tmp_path / "other_checkout" / "csrc"
    shutil.copytree(jit.CSRC, copy)
    monkeypatch.setattr(jit, "CSRC", copy)
    assert jit.build_key("cpu", "x86_64-aaaa") != here  # the same sources, in another checkout
    monkeypatch.undo()
    monkeypatch.setattr(jit.torch, "__file__", str(tmp_path / "other_venv" / "torch" / "__init__.py"))
    assert jit.build_key("cpu", "x86_64-aaaa") != here


def test_missing_tool_warns_once_and_uses_reference(fresh_state, monkeypatch):
    monkeypatch.setattr(jit, "_missing_tools", lambda device_type: "ninja is not installed (pip install ninja)")
    x = torch.randn(1, 2, 8, 8)
    f = ref.setup_filter([1, 3, 3, 1])
    with kernels.use("jit"):
        with pytest.warns(RuntimeWarning, match="ninja is not installed.*reference"):
            y = kernels.upfirdn2d(x, f, up=2, padding=2)
        assert torch.equal(y, ref.upfirdn2d(x, f, up=2, padding=2))
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            kernels.upfirdn2d(x, f, up=2, padding=2)  # no second warning
    assert jit.describe(CPU)["usable"] is False


class _WrongModule:
    """A build whose filtered_lrelu is subtly off: the parity check must reject it."""

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        return getattr(self._module, name)

    def filtered_lrelu_forward(self, *args):
        y, codes = self._module.filtered_lrelu_forward(*args)
        return y * 1.001, codes


def test_parity_check_rejects_wrong_kernels_and_caches_verdict(tmp_path):
    good = jit.get_variant(CPU)
    assert good.ready, good.error
    bad = jit.Variant("cpu", "test", module=_WrongModule(good.module), directory=tmp_path)
    jit._vet(bad, CPU)
    assert not bad.ready and "disagree" in bad.error and "filtered_lrelu forward" in bad.error
    record = json.loads(next(tmp_path.glob("parity-*.json")).read_text())
    assert record["passed"] is False
    # The verdict is keyed by the build directory: the same build is not re-checked.
    again = jit.Variant("cpu", "test", module=good.module, directory=tmp_path)
    jit._vet(again, CPU)
    assert not again.ready


def test_first_use_under_autocast_still_vets_in_float32(tmp_path):
    """bf16 PTI makes the first kernel call inside CPU autocast; its bfloat16 convolutions must not fail the build."""
    good = jit.get_variant(CPU)
    first = jit.Variant("cpu", "test", module=good.module, directory=tmp_path)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        jit._vet(first, CPU)
    assert first.ready, first.error
    assert max(first.parity["errors"].values()) < 1e-5


def test_good_build_passes_parity():
    variant = jit.get_variant(CPU)
    assert variant.parity["passed"], variant.parity
    assert max(variant.parity["errors"].values()) < 1e-5


def test_file_lock_serialises_processes(tmp_path):
    lock = tmp_path / "sgtool.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from sgtool.kernels.jit import _file_lock\n"
        f"with _file_lock(__import__('pathlib').Path({str(lock)!r})):\n"
        "    print('held', flush=True); time.sleep(1.5)"), str(Path(jit.__file__).parents[2])],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    start = time.monotonic()
    with jit._file_lock(lock):
        waited = time.monotonic() - start
    holder.wait()
    assert waited > 0.5


@pytest.mark.slow  # nvcc on torch's headers: minutes on a first run
def test_cuda_sources_compile_with_nvcc():
    missing = cuda_check.missing_requirements()
    if missing:
        pytest.skip(f"cuda-check needs nvcc and a CUDA build of torch: {missing}")
    # nvcc on torch's headers takes minutes here: an unchanged, already-compiled source is not redone.
    assert cuda_check.run(reuse=True) == 0


def test_info_reports_kernels():
    from typer.testing import CliRunner

    from sgtool.cli import app

    try:
        result = CliRunner().invoke(app, ["info", "--kernels", "jit", "--json"])
        assert result.exit_code == 0, result.output
        (cpu,) = [row for row in json.loads(result.stdout)["kernels"] if row["device"] == "cpu"]
        assert cpu["built"] and cpu["parity_passed"] and cpu["uses"] == "jit"
        result = CliRunner().invoke(app, ["info", "--kernels", "ref", "--json"])
        assert json.loads(result.stdout)["kernels"][0]["uses"] == "ref"
        bare = CliRunner().invoke(app, ["info"])  # neither a checkpoint nor --kernels: nothing to report
        assert bare.exit_code == 2 and "give a checkpoint to describe, or --kernels" in bare.stderr
    finally:
        kernels.set_backend("auto")  # the CLI sets the backend for the rest of this (test) process
