"""What kind of file a checkpoint is, from its first bytes, and sgtool's own safetensors format.

Format detection is shared by every loader (generators, encoders): empty files, HTML pages saved
instead of a download and unknown formats are reported in one line before anything is parsed.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
import zipfile
from pathlib import Path

from torch import nn

from ..errors import CheckpointError
from .factory import build_generator, generator_from_state_dict, load_state
from .safe_pickle import UnsafePickleError, safe_torch_load

SGTOOL_FORMAT = "sgtool-generator"
SGTOOL_FORMAT_VERSION = "1"
LEGACY_TORCH_MAGIC = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def sniff(path: Path) -> str:
    """safetensors | torch-zip | pickle (NVIDIA's or a legacy torch file); anything else is refused."""
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; give the checkpoint file inside it")
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        raise CheckpointError(f"{path} is empty; download it again")
    lowered = head.lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html")) or b"<html" in lowered[:256]:
        raise CheckpointError(f"{path} is an HTML page, not a checkpoint (a failed or blocked download); "
                              "download the file again and check its size")
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 0 < header_len < 100_000_000:
            return "safetensors"
    if head[:1] == b"\x80":
        return "pickle"
    raise CheckpointError(f"{path} is not a generator checkpoint (unknown file format); expected an NVIDIA "
                          ".pkl, a .pt state dict or an sgtool .safetensors file")


def torch_load(path: Path):
    """`torch.load(weights_only=True)`, plus the pathlib classes trainers store in their options.

    A file that needs anything else is refused in one line naming what it references (never with
    torch's advice to turn the safe loader off).
    """
    try:
        return safe_torch_load(path)
    except UnsafePickleError as exc:
        raise CheckpointError(f"refusing to load {path}: it references {exc.qualname}, which could run code; sgtool "
                              "reads only tensors, plain values and paths from .pt files") from None
    except NotImplementedError:
        # Python refuses to build a WindowsPath on POSIX (and vice versa).
        raise CheckpointError(f"{path} was saved on another operating system (its options hold paths of that "
                              "system) and cannot be read here") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, pickle.UnpicklingError) as exc:
        reason = first_line(exc)
        raise CheckpointError(f"{path} is truncated or corrupt ({reason}); download it again") from None


def first_line(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def save_generator(generator: nn.Module, path, metadata: dict | None = None) -> Path:
    """Write sgtool's own format: safetensors weights + the architecture config as metadata."""
    from safetensors.torch import save_file

    from ..utils.io import atomic_path

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in generator.state_dict().items()}
    meta = {"format": SGTOOL_FORMAT, "version": SGTOOL_FORMAT_VERSION, "kind": generator.kind,
            "init_kwargs": json.dumps(generator.init_kwargs), "extra": json.dumps(metadata or {})}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return Path(path)


def load_sgtool(path: Path):
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc}); write it again") from None
    if meta.get("format") != SGTOOL_FORMAT:
        # A plain safetensors state dict (e.g. converted elsewhere): infer the architecture.
        generator = generator_from_state_dict(state, source=str(path))
        generator.layout = "nvidia-state-dict"
        return generator
    if meta.get("version") != SGTOOL_FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer sgtool (format version {meta.get('version')}); "
                              "upgrade sgtool")
    generator = build_generator(meta["kind"], json.loads(meta["init_kwargs"]), str(path))
    load_state(generator, state, str(path))
    generator.layout = "sgtool"
    generator.extra_metadata = json.loads(meta.get("extra", "{}"))
    return generator

