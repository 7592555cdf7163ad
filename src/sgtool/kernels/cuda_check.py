"""`make cuda-check`: compile csrc/ops_cuda.cu with nvcc, no GPU needed, to catch syntax and type errors.

Exits 0 when it compiles, 1 when nvcc reports errors, 2 when nvcc or a CUDA build of torch is absent.
`run(reuse=True)` (the test suite) skips the compile when these exact sources already passed with
this torch and nvcc, recorded under the kernel cache like a build.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import torch

from .jit import CSRC, CUDA_SOURCES, HEADERS, NVCC_FLAGS, cache_root, pip_cuda_includes

CHECK_ARCH = "sm_80"  # one architecture keeps the check quick; the code has no arch-specific paths


def find_nvcc() -> Path | None:
    candidates = []
    if os.environ.get("CUDA_HOME"):
        candidates.append(Path(os.environ["CUDA_HOME"]) / "bin" / "nvcc")
    candidates.append(Path("/usr/local/cuda/bin/nvcc"))
    found = shutil.which("nvcc")
    if found:
        candidates.append(Path(found).resolve())
    return next((p for p in candidates if p.exists()), None)


def missing_requirements() -> str | None:
    """Why the check cannot run here, or None."""
    if find_nvcc() is None:
        return "nvcc not found (install the CUDA toolkit, or set CUDA_HOME)"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build (its CUDA headers are missing)"
    return None


def compile_command(source: Path, obj: Path) -> list[str]:
    from torch.utils import cpp_extension

    includes = [str(CSRC), *cpp_extension.include_paths(device_type="cuda"), *pip_cuda_includes(),
                sysconfig.get_paths()["include"]]
    return [
        str(find_nvcc()), "-c", str(source), "-o", str(obj), f"-arch={CHECK_ARCH}", "-std=c++20",
        "-Xcompiler", "-fPIC", "--expt-relaxed-constexpr", "-DTORCH_EXTENSION_NAME=sgtool_cuda_check",
        "-DTORCH_API_INCLUDE_EXTENSION_H", f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        *NVCC_FLAGS, *(f"-I{path}" for path in includes),
    ]


def _passed_marker() -> Path:
    digest = hashlib.sha256()
    for name in (*CUDA_SOURCES, *HEADERS):
        digest.update((CSRC / name).read_bytes())
    digest.update(repr((compile_command(Path("src"), Path("obj")), torch.__version__)).encode())
    return cache_root() / "kernels" / f"cuda-check-{digest.hexdigest()[:16]}.passed"


def run(reuse: bool = False) -> int:
    missing = missing_requirements()
    if missing:
        print(f"cuda-check skipped: {missing}", file=sys.stderr)
        return 2
    marker = _passed_marker()
    if reuse and marker.exists():
        print(f"cuda-check: these sources already compiled ({marker})")
        return 0
    with tempfile.TemporaryDirectory(prefix="sgtool-cuda-check-") as tmp:
        for name in CUDA_SOURCES:
            cmd = compile_command(CSRC / name, Path(tmp) / f"{name}.o")
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                print(f"cuda-check: nvcc failed on {name}:\n{result.stdout}{result.stderr}", file=sys.stderr)
                return 1
            print(f"cuda-check: {name} compiles ({CHECK_ARCH}, nvcc {find_nvcc()})")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return 0


if __name__ == "__main__":
    sys.exit(run())
