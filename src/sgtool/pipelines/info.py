"""`sgtool info` as a library: what a generator checkpoint holds, and which op kernels this machine uses."""

from __future__ import annotations

from ..progress import SILENT, Reporter
from ..settings import InfoSettings


def describe_checkpoint(checkpoint: str, settings: InfoSettings | None = None) -> dict:
    """Kind, config, resolution, dims, mapping layers and parameter count of a generator (file or built-in name)."""
    from ..device import resolve_device
    from ..models import describe_generator, load_generator

    settings = settings or InfoSettings()
    generator = load_generator(checkpoint, device=resolve_device(settings.device), arch=settings.arch)
    return {"checkpoint": checkpoint, **describe_generator(generator)}


def kernel_report(reporter: Reporter = SILENT) -> list[dict]:
    """Per device (the CPU, then each GPU): whether the compiled kernels build and pass their parity check,
    and what the current backend (`sgtool.kernels.set_backend`) therefore runs there."""
    import torch

    from .. import kernels
    from ..kernels import jit

    devices = [torch.device("cpu")] + [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    backend = kernels.current_backend()
    rows = []
    reporter.start("building and checking kernels (first use takes a minute)", len(devices))
    try:
        for device in devices:
            row = jit.describe(device, build=True)
            row.update(backend=backend, uses="jit" if backend != "ref" and row.get("usable") else "ref")
            rows.append(row)
            reporter.advance(info=str(device))
    finally:
        reporter.finish()
    return rows
