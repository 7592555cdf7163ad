"""Reading encoder checkpoints safely and turning them into inverters.

Encoder checkpoints (pSp / e4e / ReStyle trainers) are `torch.save`d dicts: `state_dict` with
`encoder.*` (and usually `decoder.*`) tensors, `opts` (the training options, which may hold
pathlib paths) and `latent_avg`. They are read with `formats.torch_load` (weights only, plus the
pathlib classes); nothing in the file can run code.

Which inverter a checkpoint becomes is decided by a registry of families tried in order:
each has a `matches(checkpoint)` test (on opts["encoder_type"] and the decoder's layout) and a
`build(checkpoint, device, network)` factory. More families (e.g. StyleGAN2 encoders) are added
with `register_encoder_family`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ...errors import CheckpointError
from ..factory import check_state_names
from ..formats import LEGACY_TORCH_MAGIC, sniff, torch_load


@dataclass
class EncoderCheckpoint:
    path: Path
    state_dict: dict[str, torch.Tensor]
    opts: dict
    latent_avg: torch.Tensor | None
    extra: dict = field(default_factory=dict)

    def part(self, prefix: str, drop: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
        """The tensors under `prefix.` with the prefix removed (minus the names in `drop`)."""
        cut = len(prefix) + 1
        return {k[cut:]: v for k, v in self.state_dict.items() if k.startswith(prefix + ".") and k[cut:] not in drop}

    @property
    def encoder_type(self) -> str | None:
        value = self.opts.get("encoder_type")
        return str(value) if value is not None else None


def read_encoder_checkpoint(path) -> EncoderCheckpoint:
    """Load an encoder checkpoint without executing anything it contains."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"encoder checkpoint {path} does not exist; pass the .pt file with --encoder")
    fmt = sniff(path)
    with open(path, "rb") as f:
        legacy_torch = LEGACY_TORCH_MAGIC in f.read(64)
    if fmt == "safetensors" or (fmt == "pickle" and not legacy_torch):
        raise CheckpointError(f"{path} is a generator file, not an encoder checkpoint; pass it as --network")
    data = torch_load(path)
    if not isinstance(data, dict) or not isinstance(data.get("state_dict"), dict):
        raise CheckpointError(f"{path} is not an encoder checkpoint (expected a dict with 'state_dict' and 'opts')")
    state = {str(k): v for k, v in data["state_dict"].items() if isinstance(v, torch.Tensor)}
    if not any(k.startswith(("encoder.", "hypernet.")) for k in state):  # hypernet.*: HyperStyle
        if any(k.startswith(("mapping.", "synthesis.")) for k in state):
            raise CheckpointError(f"{path} is a generator, not an encoder checkpoint; pass it as --network")
        raise CheckpointError(f"{path} holds no encoder weights (no encoder.* tensors)")
    opts = data.get("opts")
    if not isinstance(opts, dict):
        raise CheckpointError(f"{path} has no training options ('opts'); cannot tell which encoder it is")
    latent_avg = data.get("latent_avg")
    if latent_avg is not None and not isinstance(latent_avg, torch.Tensor):
        raise CheckpointError(f"{path}: 'latent_avg' is not a tensor")
    extra = {k: v for k, v in data.items() if k not in ("state_dict", "opts", "latent_avg")}
    return EncoderCheckpoint(path=path, state_dict=state, opts=dict(opts), latent_avg=latent_avg, extra=extra)


def sgtool_arch(ckpt: EncoderCheckpoint) -> dict:
    """The architecture sgtool's trainer recorded beside the reference layout (width, input_size,
    style_dim, ...); empty for the references' own checkpoints, whose architecture is fixed."""
    meta = ckpt.extra.get("sgtool")
    arch = meta.get("arch") if isinstance(meta, dict) else None
    return dict(arch) if isinstance(arch, dict) else {}


def encoder_kwargs(ckpt: EncoderCheckpoint) -> dict:
    """Constructor arguments of the encoder module beyond the reference's fixed ones."""
    arch = sgtool_arch(ckpt)
    return {k: arch[k] for k in ("width", "style_dim", "input_size") if k in arch}


def load_module_state(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load with one readable line on mismatch. Aliased/strided tensors are copied, never kept."""
    check_state_names(module, state, source, what="its architecture")
    module.load_state_dict(state, strict=True)


@dataclass
class EncoderFamily:
    name: str
    matches: Callable[[EncoderCheckpoint], bool]
    build: Callable[..., nn.Module]  # (checkpoint, device, network) -> inverter


ENCODER_FAMILIES: list[EncoderFamily] = []


def register_encoder_family(name: str, matches, build, first: bool = False) -> None:
    family = EncoderFamily(name, matches, build)
    ENCODER_FAMILIES.insert(0, family) if first else ENCODER_FAMILIES.append(family)


def build_inverter(checkpoint: EncoderCheckpoint, device="cpu", network=None):
    for family in ENCODER_FAMILIES:
        if family.matches(checkpoint):
            return family.build(checkpoint, device=device, network=network)
    known = sorted({t for f in ENCODER_FAMILIES for t in getattr(f.matches, "encoder_types", ())})
    raise CheckpointError(f"{checkpoint.path}: encoder_type {checkpoint.encoder_type!r} is not supported"
                          + (f" (supported: {', '.join(known)})" if known else ""))
