"""Photos -> W+ latents: encoder (ReStyle), optimisation (projection) or both (hybrid).

Library use (notebooks, tests, other pipelines):

    enc = load_encoder("restyle_pSp_ffhq.pt")              # decoder from the checkpoint
    steps = enc.invert(x, steps=3, transform=None)          # x [B, 3, 256, 256] in [-1, 1]
    steps[-1].latents, steps[-1].images                     # [B, num_ws, w_dim], [B, 3, 256, 256]
    result = invert_target(target, "hybrid", encoder=enc)   # one image, any method
    report = invert_images(["photos/"], "out/", InvertSettings(method="encoder"), encoder=enc)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from ..errors import SgtoolError
from ..models.encoders import face_pool, read_encoder_checkpoint
from ..models.encoders import build_inverter as _build_inverter
from ..utils.io import image_grid, save_image, save_npy, to_uint8, write_json
from .project import ProjectionStep, project

METHODS = ("encoder", "optimize", "hybrid", "hyperstyle")
ENCODER_METHODS = ("encoder", "hyperstyle")  # encoder passes only; hyperstyle also adjusts the generator
ENCODER_SIZE = 256
# Hybrid starts next to the answer: smaller steps and no exploration noise, which would throw the
# encoder's estimate away (each can still be set explicitly).
HYBRID_PROJECTOR = {"initial_learning_rate": 0.03, "initial_noise_factor": 0.0}


def load_encoder(path, device="cpu", network=None, w_encoder=None):
    """An inverter for an encoder checkpoint: `.invert(x, steps, transform)`, `.generator`.

    The decoder stored in the checkpoint is used unless `network` (a path, built-in name or
    generator module) replaces it. `w_encoder`: a HyperStyle checkpoint's W encoder (default: the
    file its options name).
    """
    from ..hub import is_registry_reference, resolve_checkpoint

    # Registry names (`sgtool models list --kind encoder`) are fetched into the model cache.
    path = resolve_checkpoint(path, kind="encoder") if is_registry_reference(path) else path
    if w_encoder is not None and is_registry_reference(w_encoder):
        w_encoder = resolve_checkpoint(w_encoder, kind="encoder")
    if w_encoder is not None:
        from ..models.encoders.hyperstyle import load_hyperstyle

        return load_hyperstyle(path, device=device, network=network, w_encoder=w_encoder)
    return _build_inverter(read_encoder_checkpoint(path), device=device, network=network)


def encoder_input(rgb: np.ndarray, size: int = ENCODER_SIZE) -> torch.Tensor:
    """uint8 HxWx3 -> [3, size, size] in [-1, 1], as ReStyle's inference transform (PIL bilinear resize)."""
    image = Image.fromarray(np.asarray(rgb, dtype=np.uint8)).resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).to(torch.float32) / 255
    return (x - 0.5) / 0.5


def projection_target(rgb: np.ndarray, size: int) -> torch.Tensor:
    """uint8 HxWx3 -> [3, size, size] in [-1, 1] at the generator's resolution (Lanczos, as NVIDIA's projector)."""
    image = Image.fromarray(np.asarray(rgb, dtype=np.uint8))
    if image.size != (size, size):
        image = image.resize((size, size), Image.LANCZOS)
    x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).to(torch.float32)
    return x / 127.5 - 1


@dataclass
class Inversion:
    """One image's result: the final W+ code and every intermediate one."""

    latents: torch.Tensor  # [num_ws, w_dim]
    step_latents: list[torch.Tensor]  # encoder steps, then the projection's final code
    seconds: float
    losses: list[float] = field(default_factory=list)  # projection loss per step (optimize / hybrid)
    step_images: list[torch.Tensor] = field(default_factory=list)  # [3, 256, 256] per step, aligned
    generator: torch.nn.Module | None = None  # hyperstyle: this image's adjusted generator (renders `latents`)


def render(generator, latents: torch.Tensor, transform: torch.Tensor | None = None) -> torch.Tensor:
    """W+ [B, num_ws, w_dim] -> images [B, C, R, R]; StyleGAN3 gets the identity (or given) input transform."""
    device = next(generator.parameters()).device
    latents = latents.to(device, torch.float32)
    kwargs = {"noise_mode": "const"}
    if generator.kind == "stylegan3":
        eye = torch.eye(3, device=device).expand(latents.shape[0], 3, 3)
        kwargs["transform"] = eye if transform is None else transform.to(device, torch.float32)
    elif transform is not None:
        raise SgtoolError("an unaligned render needs a StyleGAN3 generator (StyleGAN2 has no input transform)")
    with torch.no_grad():
        return generator.synthesis(latents, **kwargs)


def invert_target(target: torch.Tensor, method: str, generator=None, encoder=None, steps: int | None = None,
                  num_steps: int = 500, space: str = "w+", l2_weight: float = 1.0, seed: int = 0,
                  lpips_model=None, encoder_target: torch.Tensor | None = None,
                  callback: Callable[[ProjectionStep], bool | None] | None = None,
                  projector: dict | None = None) -> Inversion:
    """Invert one aligned image `target` ([3, H, W] in [-1, 1]).

    encoder: ReStyle refinement steps; optimize: projection from w_avg; hybrid: projection from the
    encoder's final code. `encoder_target` is the encoder's 256x256 input when it should differ from
    a plain resize of `target`.
    """
    if method not in METHODS:
        raise SgtoolError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if method != "optimize" and encoder is None:
        raise SgtoolError(f"--method {method} needs an encoder checkpoint: pass --encoder FILE.pt")
    generator = generator if generator is not None else getattr(encoder, "generator", None)
    if generator is None:
        raise SgtoolError("--method optimize needs a generator: pass --network FILE (or --encoder with a decoder)")
    start = time.perf_counter()
    step_latents, step_images, init = [], [], None
    adjusted = None
    if encoder is not None and method != "optimize":
        x = encoder_target if encoder_target is not None else _resize(target, ENCODER_SIZE)
        results = encoder.invert(x.unsqueeze(0), steps=steps)
        step_latents = [r.latents[0].detach().cpu() for r in results]
        step_images = [r.images[0].detach().cpu() for r in results]
        init = step_latents[-1]
        adjusted = results[-1].adjusted_generator(0) if method == "hyperstyle" else None
    losses = []
    if method not in ENCODER_METHODS:
        options = dict(HYBRID_PROJECTOR if method == "hybrid" else {})
        options.update({k: v for k, v in (projector or {}).items() if v is not None})
        result = project(generator, target, num_steps=num_steps, space=space, init_latent=init, l2_weight=l2_weight,
                         lpips_model=lpips_model, seed=seed, callback=callback, **options)
        final = result.latents.detach().cpu()
        losses = result.losses
        step_latents.append(final)
        step_images.append(face_pool(render(generator, final[None]))[0].cpu())
    return Inversion(latents=step_latents[-1], step_latents=step_latents, seconds=time.perf_counter() - start,
                     losses=losses, step_images=step_images, generator=adjusted)


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    if image.shape[-1] == size and image.shape[-2] == size:
        return image
    mode = "area" if image.shape[-1] > size else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(image[None], size=(size, size), mode=mode, **kwargs)[0]


# ----------------------------------------------------------------------------------------------------------
# Batch over files


@dataclass
class InvertSettings:
    method: str = "encoder"
    steps: int | None = None  # encoder refinement steps (None: the checkpoint's n_iters_per_batch)
    space: str = "w+"
    num_steps: int = 500
    l2_weight: float = 1.0
    seed: int = 0
    batch_size: int = 4
    align: bool = True
    align_recipe: str = "ffhq"
    skip_existing: bool = False
    save_steps: bool = False
    save_video: bool = False
    video_fps: int = 24
    metrics: bool = False
    metrics_lpips_net: str = "alex"
    id_model: str | None = None
    lpips_random_backbone: bool = False  # tests only: LPIPS without ImageNet weights
    projector: dict = field(default_factory=dict)  # extra project() options (learning rate, ramps, ...)

    def check(self) -> None:
        if self.method not in METHODS:
            raise SgtoolError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.space not in ("w", "w+"):
            raise SgtoolError(f"--space must be w or w+, got {self.space!r}")
        if self.steps is not None and self.steps < 1:
            raise SgtoolError(f"--steps must be at least 1, got {self.steps}")
        if self.num_steps < 1:
            raise SgtoolError(f"--num-steps must be at least 1, got {self.num_steps}")
        if self.batch_size < 1:
            raise SgtoolError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.save_video and self.method in ENCODER_METHODS:
            raise SgtoolError("--save-video records the optimisation: use it with --method optimize or hybrid")


@dataclass
class _Item:
    source: Path
    name: str
    aligned: np.ndarray | None = None  # uint8 HxWx3, the image inverted
    inverse_transform: np.ndarray | None = None  # synthesis.input.transform for the unaligned render
    crop: np.ndarray | None = None  # the axis-aligned crop the unaligned render corresponds to
    record: dict = field(default_factory=dict)


@dataclass
class InvertReport:
    records: list[dict]
    failed: list[dict]
    skipped: list[str]
    latents_file: Path | None
    metrics: dict | None
    config: dict


def invert_images(inputs, outdir, settings: InvertSettings, encoder=None, generator=None, device="cpu",
                  on_image: Callable[[str, int, int], None] | None = None,
                  on_step: Callable[[str, ProjectionStep], None] | None = None,
                  extra_config: dict | None = None, shard=None) -> InvertReport:
    """Invert image files/directories/globs into `outdir`; a bad item is reported and skipped.

    `on_image(name, done, total)` follows the images, `on_step(name, step)` the projection steps;
    `extra_config` is recorded in invert.json beside the settings. `shard` (utils.batch.Shard) keeps
    only that shard's inputs and names the summaries invert-shardKofN.json etc. (see `--shard`).
    """
    from ..utils.batch import select_shard, shard_file_name
    from .align import expand_inputs, output_names

    settings.check()
    outdir = Path(outdir)
    generator = generator if generator is not None else getattr(encoder, "generator", None)
    if settings.method != "optimize" and encoder is None:
        raise SgtoolError(f"--method {settings.method} needs an encoder checkpoint: pass --encoder FILE.pt")
    if generator is None:
        raise SgtoolError("--method optimize needs a generator: pass --network FILE (or --encoder FILE.pt)")
    _check_hyperstyle(settings.method, encoder)
    sources = select_shard(expand_inputs(inputs), shard)
    names = output_names(sources)
    items = [_Item(source=s, name=names[s]) for s in sources]
    skipped = [it.name for it in items if settings.skip_existing and _done(outdir, it.name)]
    todo = [it for it in items if it.name not in skipped]

    lpips_model = _lpips(settings, "vgg", device) if settings.method not in ENCODER_METHODS else None
    evaluator = _Evaluator(settings, device) if settings.metrics else None

    records, failed = [], []
    all_latents: dict[str, list[np.ndarray]] = {}
    done = len(skipped)
    per_pass = settings.batch_size if settings.method in ENCODER_METHODS else 1
    for start in range(0, len(todo), per_pass):
        batch = todo[start:start + per_pass]
        ready = []
        for item in batch:
            try:
                _prepare(item, settings, generator)
                ready.append(item)
            except SgtoolError as exc:
                failed.append({"name": item.name, "source": str(item.source), "error": str(exc)})
        try:
            results = _invert_batch(ready, settings, encoder, generator, lpips_model, outdir, on_step)
        except SgtoolError as exc:
            failed += [{"name": it.name, "source": str(it.source), "error": str(exc)} for it in ready]
            results = []
        for item, inversion in results:
            record = _write_outputs(item, inversion, settings, generator, outdir, evaluator)
            all_latents[item.source.name] = [lat.numpy().astype(np.float32) for lat in inversion.step_latents]
            records.append(record)
        done += len(batch)
        if on_image is not None:
            for item in batch:
                on_image(item.name, done, len(items))

    latents_file = _write_latents_dict(outdir, all_latents, keep_existing=bool(skipped),
                                       name=shard_file_name("latents.npy", shard))
    summary = None
    if evaluator is not None and records:
        from ..metrics import summarize

        summary = summarize([r["metrics"] for r in records if "metrics" in r])
        write_json({"images": {r["name"]: r["metrics"] for r in records if "metrics" in r}, "mean": summary},
                   outdir / shard_file_name("metrics.json", shard))
    config = {k: v for k, v in asdict(settings).items()}
    config.update(encoder=getattr(encoder, "source", None), network=getattr(generator, "source", None),
                  encoder_type=getattr(encoder, "encoder_type", None), device=str(device),
                  w_encoder=getattr(encoder, "w_encoder_source", None), **(extra_config or {}))
    write_json({"config": config, "images": records, "failed": failed, "skipped": skipped,
                "latents": str(latents_file) if latents_file else None, "metrics": summary},
               outdir / shard_file_name("invert.json", shard))
    return InvertReport(records=records, failed=failed, skipped=skipped, latents_file=latents_file,
                        metrics=summary, config=config)


def _check_hyperstyle(method: str, encoder) -> None:
    is_hyperstyle = getattr(encoder, "family", None) == "hyperstyle"
    if method == "hyperstyle" and not is_hyperstyle:
        raise SgtoolError("--method hyperstyle needs a HyperStyle checkpoint as --encoder (e.g. hyperstyle_ffhq.pt)")
    if is_hyperstyle and method != "hyperstyle":
        raise SgtoolError(f"{encoder.source} is a HyperStyle checkpoint: run it with --method hyperstyle")


def _done(outdir: Path, name: str) -> bool:
    return (outdir / f"{name}_latent.npy").is_file() and (outdir / f"{name}_recon.png").is_file()


def _prepare(item: _Item, settings: InvertSettings, generator) -> None:
    from .align import read_image

    rgb = read_image(item.source)
    if not settings.align:
        item.aligned = rgb
        return
    from .align import align_image

    size = max(ENCODER_SIZE, int(generator.img_resolution))
    faces = align_image(rgb, size=size, recipe=settings.align_recipe)
    if not faces:
        raise SgtoolError(f"{item.source}: no face found; pass --no-align if it is already an aligned crop")
    face = faces[0]
    item.aligned = face.aligned
    item.crop = face.crop
    if generator.kind == "stylegan3":
        item.inverse_transform = np.asarray(face.inverse_transform, dtype=np.float32)
    item.record["faces_found"] = len(faces)


def _invert_batch(items, settings, encoder, generator, lpips_model, outdir, on_step):
    if not items:
        return []
    if settings.method in ENCODER_METHODS:
        start = time.perf_counter()
        x = torch.stack([encoder_input(it.aligned) for it in items])
        results = encoder.invert(x, steps=settings.steps)
        per_image = (time.perf_counter() - start) / len(items)
        out = []
        for i, item in enumerate(items):
            lat = [r.latents[i].detach().cpu() for r in results]
            imgs = [r.images[i].detach().cpu() for r in results]
            adjusted = results[-1].adjusted_generator(i) if settings.method == "hyperstyle" else None
            out.append((item, Inversion(latents=lat[-1], step_latents=lat, seconds=per_image, step_images=imgs,
                                        generator=adjusted)))
        return out
    item = items[0]
    target = projection_target(item.aligned, generator.img_resolution)
    writer = _video_writer(item, settings, generator, outdir) if settings.save_video else None
    target_frame = to_uint8(target[None])[0] if writer is not None else None

    def step_callback(step: ProjectionStep):
        if writer is not None:
            writer.write(np.concatenate([target_frame, to_uint8(step.image)[0]], axis=1))
        if on_step is not None:
            on_step(item.name, step)

    ok = False
    try:
        inversion = invert_target(target, settings.method, generator=generator, encoder=encoder, steps=settings.steps,
                                  num_steps=settings.num_steps, space=settings.space, l2_weight=settings.l2_weight,
                                  seed=settings.seed, lpips_model=lpips_model,
                                  encoder_target=encoder_input(item.aligned) if encoder is not None else None,
                                  callback=step_callback, projector=settings.projector)
        ok = True
    finally:
        if writer is not None:
            writer.close(ok=ok)
    if writer is not None:
        item.record["video"] = str(writer.path)
    return [(item, inversion)]


def _video_writer(item, settings, generator, outdir):
    from fractions import Fraction

    from .video_io import VideoWriter

    size = int(generator.img_resolution)
    return VideoWriter(outdir / f"{item.name}_projection.mp4", width=2 * size, height=size,
                       fps=Fraction(settings.video_fps))


def _write_outputs(item: _Item, inversion: Inversion, settings, generator, outdir: Path, evaluator) -> dict:
    name = item.name
    latent = inversion.latents.to(torch.float32)
    record = {"name": name, "source": str(item.source), **item.record}
    record["latent"] = str(save_npy(latent.numpy(), outdir / f"{name}_latent.npy"))
    if inversion.generator is not None:
        # HyperStyle: the latent belongs to this image's adjusted weights; `sgtool edit --network` takes it.
        from ..models import save_generator

        generator = inversion.generator
        record["generator"] = str(save_generator(generator, outdir / f"{name}_generator.safetensors",
                                                 metadata={"hyperstyle": generator.hyperstyle,
                                                           "source": str(item.source)}))
    recon = render(generator, latent[None])
    record["recon"] = str(save_image(recon[0], outdir / f"{name}_recon.png"))
    if item.inverse_transform is not None:
        transform = torch.from_numpy(item.inverse_transform)[None]
        unaligned = render(generator, latent[None], transform)
        record["recon_unaligned"] = str(save_image(unaligned[0], outdir / f"{name}_recon_unaligned.png"))
        record["inverse_transform"] = item.inverse_transform.tolist()
    if settings.save_steps and inversion.step_images:
        tiles = [to_uint8(img[None])[0] for img in inversion.step_images]
        tiles.append(np.asarray(Image.fromarray(item.aligned).resize((ENCODER_SIZE, ENCODER_SIZE), Image.BILINEAR)))
        record["steps"] = str(save_image(image_grid(np.stack(tiles), cols=len(tiles)), outdir / f"{name}_steps.png"))
    record["num_steps"] = len(inversion.step_latents)
    record["seconds"] = round(inversion.seconds, 4)
    if inversion.losses:
        record["final_loss"] = inversion.losses[-1]
    if evaluator is not None:
        record["metrics"] = evaluator(recon, item.aligned, inversion.seconds)
    return record


def _lpips(settings: InvertSettings, net: str, device):
    from ..losses import load_lpips

    if not settings.lpips_random_backbone:
        return load_lpips(net, device=device)
    # A random backbone drawn from a fixed seed, so that test runs stay reproducible.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return load_lpips(net, device=device, random_backbone=True)


class _Evaluator:
    def __init__(self, settings: InvertSettings, device):
        from ..metrics import IdentityModel

        self.lpips = _lpips(settings, settings.metrics_lpips_net, device)
        self.identity = IdentityModel.load(settings.id_model, device=device) if settings.id_model else None

    def __call__(self, recon: torch.Tensor, aligned: np.ndarray, seconds: float) -> dict:
        from ..metrics import compare_images

        target = projection_target(aligned, max(ENCODER_SIZE, recon.shape[-1]))[None]
        values = compare_images(recon.cpu(), target, lpips_model=self.lpips, id_model=self.identity)[0]
        values["seconds"] = round(seconds, 4)
        return values


def _write_latents_dict(outdir: Path, latents: dict[str, list[np.ndarray]], keep_existing: bool,
                        name: str = "latents.npy") -> Path | None:
    """One latents.npy for the run in stylegan3-editing's layout: file name -> list of per-step W+ codes."""
    path = outdir / name
    if keep_existing and path.is_file():
        from ..latents import load_npy

        try:
            previous = load_npy(path)
        except SgtoolError:
            previous = None
        if isinstance(previous, dict):
            latents = {**{str(k): list(v) if isinstance(v, (list, tuple)) else [v] for k, v in previous.items()},
                       **latents}
    if not latents:
        return None
    return save_npy(np.array(latents, dtype=object), path, allow_pickle=True)
