"""Build, cache and vet the C++/CUDA kernels in csrc/.

A kernel module is compiled on first use with torch.utils.cpp_extension.load (ninja), into
`<cache>/kernels/<variant>-<key>/` where the key hashes the sources, the build flags, the torch and
Python versions and the device (CPU instruction set or CUDA architecture). A file lock serialises
builds across processes. Before a module is trusted on a device it must match the reference ops on
small random inputs (forward and gradients); that verdict is cached beside the build. Any failure
warns once, naming what is missing and how to fix it, and the callers fall back to the reference.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import threading
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from ..utils.records import read_json

CSRC = Path(__file__).parent / "csrc"
HEADERS = ("sgtool_ops.h",)
CPU_SOURCES = ("ops_cpu.cpp",)
CUDA_SOURCES = ("ops_cuda.cu",)
# -march=native makes the build specific to this CPU's instruction set, which is part of the key.
CPU_CFLAGS = ("-O3", "-march=native", "-fopenmp")
CPU_LDFLAGS = ("-fopenmp",)
CUDA_CFLAGS = ("-O3",)
NVCC_FLAGS = ("-O3",)
PARITY_VERSION = 1  # bump when the parity check itself changes


def _cpp_extension():
    """torch.utils.cpp_extension, without its 'No CUDA runtime is found' notice on CPU-only machines."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import cpp_extension

    return cpp_extension


def cache_root() -> Path:
    """$SGTOOL_CACHE, else $XDG_CACHE_HOME/sgtool, else ~/.cache/sgtool."""
    if os.environ.get("SGTOOL_CACHE"):
        return Path(os.environ["SGTOOL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "sgtool"


@dataclass
class Variant:
    """One buildable module: the CPU build, or the CUDA build for one GPU architecture."""

    device_type: str  # "cpu" | "cuda"
    device_tag: str  # instruction set / GPU architecture the build is specific to
    module: object = None
    error: str | None = None  # why it is unusable (build failed, missing tool, parity failed)
    checked: bool = False
    parity: dict = field(default_factory=dict)
    directory: Path | None = None

    @property
    def ready(self) -> bool:
        return self.module is not None and self.checked and self.error is None


_lock = threading.Lock()
_variants: dict[str, Variant] = {}
_warned: set[str] = set()


def _cpu_tag() -> str:
    flags = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    return f"{platform.machine()}-{hashlib.sha256(flags.encode()).hexdigest()[:8]}"


def _cuda_tag(device: torch.device) -> str:
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}"


def _sources(device_type: str) -> list[Path]:
    names = CPU_SOURCES if device_type == "cpu" else CUDA_SOURCES
    return [CSRC / n for n in names]


def build_key(device_type: str, device_tag: str) -> str:
    digest = hashlib.sha256()
    for path in sorted(_sources(device_type) + [CSRC / h for h in HEADERS]):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    flags = (CPU_CFLAGS, CPU_LDFLAGS) if device_type == "cpu" else (CUDA_CFLAGS, NVCC_FLAGS, torch.version.cuda)
    # The build files name the sources and torch's headers by absolute path: two checkouts or two venvs on one
    # machine would otherwise take turns rebuilding the same folder.
    places = (str(CSRC.resolve()), str(Path(torch.__file__).resolve().parent))
    for part in (flags, places, torch.__version__, sys.version_info[:2], device_type, device_tag, PARITY_VERSION):
        digest.update(repr(part).encode())
    return digest.hexdigest()[:16]


def _variant_id(device: torch.device) -> tuple[str, str]:
    if device.type == "cuda":
        return "cuda", _cuda_tag(device)
    return "cpu", _cpu_tag()


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


@contextlib.contextmanager
def _file_lock(path: Path):
    """Exclusive lock held while building or writing the cache (released if the process dies)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: best effort, ninja still rebuilds consistently
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def pip_cuda_includes() -> list[str]:
    """Header folders of the nvidia-* wheels torch depends on (cuSPARSE, cuBLAS...), which a bare
    CUDA toolkit install may lack."""
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    roots = list(spec.submodule_search_locations) if spec and spec.submodule_search_locations else []
    return sorted(str(p) for root in roots for p in Path(root).glob("*/include") if p.is_dir())


def _missing_tools(device_type: str) -> str | None:
    cpp_extension = _cpp_extension()

    try:
        cpp_extension.verify_ninja_availability()
    except RuntimeError:
        return "ninja is not installed (pip install ninja)"
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r} not on PATH; install g++ or clang, or set CXX)"
    if device_type == "cuda":
        home = cpp_extension.CUDA_HOME
        if home is None or not (Path(home) / "bin" / "nvcc").exists():
            return "nvcc was not found (install the CUDA toolkit and set CUDA_HOME)"
    return None


def _build(variant: Variant) -> None:
    cpp_extension = _cpp_extension()

    key = build_key(variant.device_type, variant.device_tag)
    directory = cache_root() / "kernels" / f"{variant.device_type}-{key}"
    directory.mkdir(parents=True, exist_ok=True)
    variant.directory = directory
    failure = directory / "build_failed.txt"
    missing = _missing_tools(variant.device_type)
    if missing:
        variant.error = f"cannot build the {variant.device_type} kernels: {missing}"
        return
    with _file_lock(directory / "sgtool.lock"):
        if failure.exists():
            variant.error = failure.read_text()
            return
        kwargs = dict(
            name=f"sgtool_kernels_{variant.device_type}_{key}",
            sources=[str(p) for p in _sources(variant.device_type)],
            extra_include_paths=[str(CSRC)],
            build_directory=str(directory),
            verbose=False,
        )
        if variant.device_type == "cpu":
            kwargs.update(extra_cflags=list(CPU_CFLAGS), extra_ldflags=list(CPU_LDFLAGS))
        else:
            kwargs.update(extra_cflags=list(CUDA_CFLAGS), extra_cuda_cflags=list(NVCC_FLAGS))
            kwargs["extra_include_paths"] += pip_cuda_includes()
        arch_env = os.environ.get("TORCH_CUDA_ARCH_LIST")
        if not any(directory.glob("*.so")) and not any(directory.glob("*.pyd")):
            # Otherwise the first command on a machine seems to hang for a minute or more.
            sys.stderr.write(f"sgtool: compiling the {variant.device_type} kernels into {directory} "
                             "(first use on this machine only; a minute or two)\n")
        try:
            if variant.device_type == "cuda":
                # Build only for this GPU: the architecture is part of the key.
                digits = variant.device_tag.removeprefix("sm_")
                os.environ["TORCH_CUDA_ARCH_LIST"] = f"{digits[:-1]}.{digits[-1]}"
            variant.module = cpp_extension.load(**kwargs)
        except Exception as exc:  # compiler errors arrive as RuntimeError/CalledProcessError/ImportError
            detail = str(exc).strip().splitlines()[-6:]
            message = (f"building the {variant.device_type} kernels failed ({type(exc).__name__}: "
                       f"{' | '.join(detail)}); to retry after fixing the toolchain, delete {directory}")
            failure.write_text(message)
            variant.error = message
        finally:
            if variant.device_type == "cuda":
                if arch_env is None:
                    os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
                else:
                    os.environ["TORCH_CUDA_ARCH_LIST"] = arch_env


def _vet(variant: Variant, device: torch.device) -> None:
    """Run the parity check once per build and device kind; the verdict is cached beside the build."""
    from .parity import parity_check

    record = variant.directory / f"parity-{device.type}-{variant.device_tag}.json"
    with _file_lock(variant.directory / "sgtool.lock"):
        if record.exists():
            variant.parity = read_json(record)
        else:
            try:
                # The first op call may come from inside no_grad, inference_mode or autocast code (bf16 PTI): a
                # reference run in bfloat16 would fail a good build, and the verdict is kept.
                with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
                    variant.parity = parity_check(variant.module, device)
            except Exception as exc:  # a crash in a kernel is a failed check, not a crash of the caller
                variant.parity = {"passed": False, "failures": [f"{type(exc).__name__}: {exc}"],
                                  "trace": traceback.format_exc(limit=3)}
            else:
                # Only a completed comparison is a verdict worth keeping; a crash is retried next time.
                tmp = record.with_suffix(".tmp")
                tmp.write_text(json.dumps(variant.parity, indent=1))
                tmp.replace(record)
    variant.checked = True
    if not variant.parity.get("passed"):
        variant.error = (f"the {device.type} kernels disagree with the reference ops "
                         f"({'; '.join(variant.parity.get('failures', []))[:400]}); using the reference"
                         + (f" (verdict cached in {record})" if record.exists() else ""))


def get_variant(device: torch.device, build: bool = True) -> Variant | None:
    """The (built and vetted) kernel module for `device`; None if it is not built and build=False."""
    device_type, tag = _variant_id(device)
    if device_type not in ("cpu", "cuda"):
        return None
    name = f"{device_type}-{tag}"
    with _lock:
        variant = _variants.get(name)
        if variant is not None or not build:
            return variant
        variant = Variant(device_type, tag)
        _build(variant)
        if variant.module is not None:
            _vet(variant, device)
        _variants[name] = variant
    if variant.error:
        warn_once(name, f"sgtool kernels: {variant.error}. Falling back to the pure-PyTorch reference ops "
                        "(same numbers, slower); pass --kernels ref to silence this.")
    return variant


def module_for(device: torch.device):
    """The vetted extension module for `device`, building it on first use; None means use the reference."""
    if device.type not in ("cpu", "cuda"):
        return None
    variant = get_variant(device)
    return variant.module if variant is not None and variant.ready else None


def describe(device: torch.device, build: bool = False) -> dict:
    """What is built, vetted and used for `device` (for `sgtool info --kernels`)."""
    device_type, tag = _variant_id(device)
    key = build_key(device_type, tag)
    directory = cache_root() / "kernels" / f"{device_type}-{key}"
    variant = get_variant(device, build=build)
    facts = {"device": str(device), "variant": f"{device_type}-{tag}", "cache_dir": str(directory),
             "built": variant.module is not None if variant else directory.is_dir() and any(directory.glob("*.so")),
             "missing_tools": _missing_tools(device_type)}
    if variant is not None:
        facts.update(checked=variant.checked, parity_passed=bool(variant.parity.get("passed")), error=variant.error,
                     usable=variant.ready)
    return facts
