"""Perceptual losses with their pretrained backbones located (never silently downloaded offline)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch

from .errors import SgtoolError

# torchvision's ImageNet weights that LPIPS builds on.
LPIPS_BACKBONES = {
    "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
}


def hub_checkpoint_path(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def ensure_hub_file(url: str) -> Path:
    """Make sure torchvision's cache holds `url`'s file: download it unless SGTOOL_OFFLINE=1.

    Registry files (`sgtool models download lpips-vgg`) come through sgtool's verified model
    cache, which also serves them offline. Failure is one line naming the file, the URL and
    where to put it.
    """
    from .hub import cached_path, copy_into, entry_for_url, is_offline

    path = hub_checkpoint_path(url)
    if path.is_file():
        return path
    entry = entry_for_url(url)
    if entry is not None and cached_path(entry).is_file():
        return copy_into(entry, path)
    reason = "SGTOOL_OFFLINE is set"
    if not is_offline():
        if entry is not None:  # resumable, checksum-verified, locked download
            try:
                return copy_into(entry, path)
            except SgtoolError as exc:
                reason = f"download failed: {type(exc).__name__}"
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".part")
            try:
                torch.hub.download_url_to_file(url, str(tmp), progress=False)
                os.replace(tmp, path)
                return path
            except Exception as exc:  # any network failure ends in the same advice
                reason = f"download failed: {type(exc).__name__}"
            finally:
                tmp.unlink(missing_ok=True)
    raise SgtoolError(f"pretrained weights {path.name} are missing ({reason}); download {url} and place it at "
                      f"{path} (or set TORCH_HOME to the folder that holds hub/checkpoints/{path.name})")


def load_lpips(net: str = "vgg", device="cpu", random_backbone: bool = False, seed: int = 0) -> torch.nn.Module:
    """LPIPS distance (inputs in [-1, 1]).

    `random_backbone` is for tests that must not need ImageNet weights: the backbone is drawn from
    `seed` on its own random stream, so a run (and its resumption) always gets the same network.
    """
    import lpips

    if net not in LPIPS_BACKBONES:
        raise SgtoolError(f"unknown LPIPS network {net!r}; choose one of {', '.join(LPIPS_BACKBONES)}")
    if not random_backbone:
        ensure_hub_file(LPIPS_BACKBONES[net])
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        # lpips still uses torchvision's deprecated `pretrained=` argument.
        warnings.simplefilter("ignore", UserWarning)
        torch.manual_seed(seed)
        model = lpips.LPIPS(net=net, pnet_rand=random_backbone, verbose=False)
    return model.eval().requires_grad_(False).to(device)
