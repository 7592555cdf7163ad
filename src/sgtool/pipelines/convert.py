"""`sgtool convert` as a library: move a generator between checkpoint layouts and check the copy renders the same.

    report = convert_generator("stylegan2-ffhq.pkl", "stylegan2-ffhq.pt", to="rosinality")
    report.max_abs_diff  # render of the written file vs the source, same latent

Layouts: `nvidia-pkl` (NVIDIA's network pickle, loadable by their code and ours), `rosinality`
(`{'g_ema': state_dict, 'latent_avg'}` as written by rosinality's convert_weight.py, loadable by
stylegan2-pytorch and the e4e/pSp/HyperStyle/PTI repositories) and `sgtool` (safetensors + config).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import SgtoolError
from ..settings import ConvertSettings
from ..utils.io import atomic_path, write_json

TARGETS = ("nvidia-pkl", "rosinality", "sgtool")
SUFFIX_TARGETS = {".pkl": "nvidia-pkl", ".pt": "rosinality", ".pth": "rosinality", ".safetensors": "sgtool"}
VERIFY_SEED = 0


@dataclass
class ConvertReport:
    source: str
    output: Path
    to: str
    source_layout: str | None
    kind: str
    resolution: int
    notes: list[str] = field(default_factory=list)
    max_abs_diff: float | None = None

    def as_dict(self) -> dict:
        return {"input": self.source, "output": str(self.output), "to": self.to, "source_layout": self.source_layout,
                "kind": self.kind, "resolution": self.resolution, "notes": self.notes,
                "verify_seed": VERIFY_SEED if self.max_abs_diff is not None else None,
                "max_abs_diff": self.max_abs_diff}


def target_for(output: Path, to: str | None) -> str:
    if to is not None:
        if to not in TARGETS:
            raise SgtoolError(f"--to must be one of {', '.join(TARGETS)}, got {to!r}")
        return to
    guess = SUFFIX_TARGETS.get(Path(output).suffix.lower())
    if guess is None:
        raise SgtoolError(f"cannot tell the layout from {output}'s extension; pass --to {'|'.join(TARGETS)}")
    return guess


def save_rosinality(generator, path) -> tuple[Path, list[str]]:
    """Write `{'g_ema', 'latent_avg'}` (contiguous tensors only, so torch.load(weights_only=True) reads it)."""
    from ..models.rosinality import export_rosinality

    checkpoint, notes = export_rosinality(generator)
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return Path(path), notes


def write_generator(generator, output, to: str, metadata: dict | None = None) -> list[str]:
    """Write `generator` in layout `to`; returns notes on anything the layout cannot carry."""
    from ..errors import CheckpointError
    from ..models import save_generator
    from ..models.nvidia_pickle import save_nvidia_pickle

    try:
        if to == "nvidia-pkl":
            save_nvidia_pickle(generator, output)
            return []
        if to == "rosinality":
            return save_rosinality(generator, output)[1]
        save_generator(generator, output, metadata=metadata)
        return []
    except CheckpointError as exc:
        raise SgtoolError(f"cannot write {output}: {exc}") from None


@torch.no_grad()
def render_check(generator, seed: int = VERIFY_SEED) -> torch.Tensor:
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, generator.z_dim)).to(torch.float32)
    device = next(generator.parameters()).device
    ws = generator.mapping(z.to(device), None)
    kwargs = {"transform": torch.eye(3, device=device)[None]} if generator.kind == "stylegan3" else {}
    return generator.synthesis(ws, noise_mode="const", **kwargs).cpu()


def convert_generator(source, output, to: str | None = None, device="cpu", verify: bool = True) -> ConvertReport:
    """Load any supported generator file (or built-in name) and write it in another layout.

    With verify, the written file is loaded back and rendered from the same z as the source.
    """
    from ..models import load_generator

    output = Path(output)
    to = target_for(output, to)
    if Path(str(source)).resolve() == output.resolve():
        raise SgtoolError(f"{output} is the input file; choose a different output path")
    generator = load_generator(source, device=device)
    if generator.c_dim:
        raise SgtoolError(f"{source} is class-conditional; convert supports unconditional generators only")
    notes = write_generator(generator, output, to, metadata={"converted_from": str(source),
                                                             "source_layout": getattr(generator, "layout", None)})
    report = ConvertReport(source=str(source), output=output, to=to, source_layout=getattr(generator, "layout", None),
                           kind=generator.kind, resolution=int(generator.img_resolution), notes=notes)
    if verify:
        copy = load_generator(output, device=device)
        report.max_abs_diff = float((render_check(copy) - render_check(generator)).abs().max())
    return report


def convert_checkpoint(source, output, settings: ConvertSettings | None = None) -> tuple[ConvertReport, dict]:
    """`sgtool convert`: `convert_generator` with the command's settings, recorded in OUTPUT.json beside the file."""
    from ..device import resolve_device

    settings = settings or ConvertSettings()
    output = Path(output)
    report = convert_generator(source, output, to=settings.to, device=resolve_device(settings.device),
                               verify=settings.verify)
    summary = {**report.as_dict(), "settings": settings.record()}
    write_json(summary, output.with_name(output.name + ".json"))
    return report, summary
