"""`sgtool edit --crossover A B --mask M`: one latent whose render is A under the mask and B elsewhere, without a
visible seam (Image2StyleGAN++'s crossover: the composite embedded by masked optimisation, its seam a short
cross-fade the generator renders as its own). A and B are aligned images (or latent files, rendered first).

Writes OUTDIR/A_x_B_latent.npy (edit it like any other latent), A_x_B.png and crossover.json (settings, inputs,
how close the render is to A inside and to B outside).

    summary = run_crossover(plan_edit(["a.png", "b.png"], EditSettings(network=G, crossover=True,
                                                                          crossover_mask="m.png")))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...device import resolve_device
from ...errors import SgtoolError
from ...latents import latent_stem, load_latents
from ...progress import SILENT, Reporter
from ...settings import EditSettings
from ...utils.io import save_image, save_npy, to_uint8, write_json
from ..invert.masks import fit_mask, read_mask
from ..shared.batch import IMAGE_SUFFIXES, LATENT_SUFFIXES
from ..shared.images import encoder_input, generator_target, read_image
from ..shared.render import render
from .local import embed_composite, inside_outside_errors


def check_crossover(inputs: list[Path], settings: EditSettings) -> None:
    """Bad usage of --crossover, before anything loads."""
    if len(inputs) != 2:
        raise SgtoolError(f"--crossover takes two inputs, A (inside the mask) and B (outside), got {len(inputs)}")
    if settings.crossover_mask is None:
        raise SgtoolError("--crossover needs --mask FILE: a grayscale image, white where A is taken")
    if settings.region is not None or settings.scribble is not None:
        raise SgtoolError("--crossover makes a new latent: give --region or --scribble in a later edit of it")
    for path in inputs:
        if path.suffix.lower() not in IMAGE_SUFFIXES | LATENT_SUFFIXES or not path.is_file():
            raise SgtoolError(f"{path}: --crossover takes image files or NAME_latent.npy files")
    if settings.network is None and settings.encoder is None:
        raise SgtoolError("--crossover needs --network (the generator) or --encoder (whose decoder is used)")


def run_crossover(inputs: list[Path], settings: EditSettings, reporter: Reporter = SILENT, generator=None,
                  encoder=None) -> dict:
    """Embed the crossover of the two inputs into settings.outdir; returns the crossover.json record."""
    from ..invert.run import load_models
    from ...losses import load_lpips

    check_crossover(inputs, settings)
    mask = read_mask(settings.crossover_mask, white="where the first image shows (the second shows where black)")
    device = resolve_device(settings.device)
    if generator is None:
        encoder, generator = load_models(settings.encoder, settings.network, device, need="--crossover")
    size = int(generator.img_resolution)
    a, b = (_as_image(path, generator) for path in inputs)
    if a[1] != b[1]:
        raise SgtoolError(f"{inputs[0]} is {a[1][1]}x{a[1][0]} but {inputs[1]} is {b[1][1]}x{b[1][0]}: a crossover "
                          "takes two images of one size (aligned crops)")
    mask = fit_mask(mask, *a[1], name=str(settings.crossover_mask), note=reporter.note)
    init = None
    if encoder is not None:  # start from the encoder's code of the plain composite, as hybrid inversion does
        weights = torch.from_numpy(fit_mask(mask, size, size, ""))
        blend = weights * a[0] + (1 - weights) * b[0]
        init = encoder.invert(encoder_input(to_uint8(blend[None])[0])[None])[-1].latents[0].detach()
    lpips_model = load_lpips("vgg", device, random_backbone=settings.invert.lpips_random_backbone)
    reporter.start("crossover", settings.local.steps)
    try:
        latent = embed_composite(generator, a[0], b[0], mask, settings.local, init, lpips_model,
                                 callback=lambda step: reporter.advance(info=f"loss {step.loss:.4f}"))
    finally:
        reporter.finish()
    image = render(generator, latent[None])
    stem = f"{_stem(inputs[0])}_x_{_stem(inputs[1])}"
    outdir = Path(settings.outdir)
    outputs = [save_npy(latent.cpu().numpy().astype(np.float32), outdir / f"{stem}_latent.npy"),
               save_image(to_uint8(image)[0], outdir / f"{stem}.png")]
    record = {"command": "edit --crossover", "settings": settings.record(), "a": str(inputs[0]),
              "b": str(inputs[1]), "mask": str(settings.crossover_mask), "latent": str(outputs[0]),
              "image": str(outputs[1]), **inside_outside_errors(image, a[0], b[0], mask),
              "outputs": [str(p) for p in outputs]}
    write_json(record, outdir / "crossover.json")
    return {**record, "exit_code": 0}


def _as_image(path: Path, generator) -> tuple[torch.Tensor, tuple[int, int]]:
    """An input as [3, R, R] in [-1, 1] at the generator's size, and its own (height, width)."""
    if path.suffix.lower() in LATENT_SUFFIXES:
        latents = load_latents(path, generator.num_ws, generator.w_dim)
        if len(latents) != 1:
            raise SgtoolError(f"{path} holds {len(latents)} latents; --crossover takes one per input")
        size = int(generator.img_resolution)
        return render(generator, next(iter(latents.values())))[0].cpu(), (size, size)
    rgb = read_image(path)
    return generator_target(rgb, generator.img_resolution), rgb.shape[:2]


def _stem(path: Path) -> str:
    return latent_stem(path) if path.suffix.lower() in LATENT_SUFFIXES else path.stem
