"""Photos -> W+ latents: encoder (ReStyle), optimisation (projection) or both (hybrid).

Library use (notebooks, tests, other pipelines):

    enc = load_encoder("restyle_pSp_ffhq.pt")              # decoder from the checkpoint
    steps = enc.invert(x, steps=3, transform=None)          # x [B, 3, 256, 256] in [-1, 1]
    steps[-1].latents, steps[-1].images                     # [B, num_ws, w_dim], [B, 3, 256, 256]
    result = invert_target(target, "hybrid", encoder=enc)   # one image, any method
    summary = invert_batch(["photos/"], InvertSettings(encoder="restyle_pSp_ffhq.pt", outdir="out/"))
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from ...device import resolve_device
from ...errors import SgtoolError
from ...models.encoders import build_inverter, face_pool, read_encoder_checkpoint
from ...models.encoders.sfe import save_features
from ...models.encoders.sfe_layers import FeatureLayer, render_with_feature
from ...progress import SILENT, Reporter
from ...settings import InversionOptions, InvertSettings, Projector
from ...utils.batch import Shard
from ...utils.io import image_grid, save_image, save_npy, to_uint8, write_json
from ..shared.batch import Batch, Item, collect, earlier_items
from ..shared.images import ENCODER_SIZE, encoder_input, generator_target, read_image, resized
from .masks import check_photo_size, face_mask, read_mask, region_errors
from .latents_dict import write_latents_dict
from .noise import save_noise, with_noise
from .project import ProjectionStep, project
from ..shared.render import render
from ..shared.transforms import unaligned_crops

METHODS = ("encoder", "optimize", "hybrid", "hyperstyle")
ENCODER_METHODS = ("encoder", "hyperstyle")  # encoder passes only; hyperstyle also adjusts the generator


def load_encoder(path, device="cpu", network=None, w_encoder=None):
    """An inverter for an encoder checkpoint: `.invert(x, steps, transform)`, `.generator`.

    The decoder stored in the checkpoint is used unless `network` (a path, registry or built-in name,
    or a generator module) replaces it. `w_encoder`: a HyperStyle checkpoint's W encoder (default: the file its
    options name) or the e4e of a StyleFeatureEditor. A registry name brings the files it `needs` unless given.
    """
    from ...hub import find_entry, resolve_reference

    needs = dict(entry.needs) if not Path(str(path)).exists() and (entry := find_entry(str(path))) else {}
    network = network if network is not None else needs.get("network")
    w_encoder = w_encoder if w_encoder is not None else needs.get("w_encoder")
    path = resolve_reference(path, kind="encoder")
    if isinstance(network, (str, Path)):
        network = resolve_reference(network, kind="generator")
    from ...models.encoders.sfe import is_feature_editor_checkpoint, load_feature_inverter

    if is_feature_editor_checkpoint(path):
        return load_feature_inverter(path, device=device, network=network,
                                     w_encoder=resolve_reference(w_encoder, kind="encoder") if w_encoder else None)
    checkpoint = read_encoder_checkpoint(path)
    if w_encoder is not None:
        from ...models.encoders.hyperstyle import HYPERSTYLE_TYPES, build_hyperstyle

        if checkpoint.encoder_type not in HYPERSTYLE_TYPES:
            raise SgtoolError(f"{path} is a {checkpoint.encoder_type} (W+) encoder; --w-encoder goes with a "
                              "StyleFeatureEditor or HyperStyle file as -e: pass one, or drop --w-encoder")
        return build_hyperstyle(checkpoint, device=device, network=network,
                                w_encoder=resolve_reference(w_encoder, kind="encoder"))
    return build_inverter(checkpoint, device=device, network=network)


def load_models(encoder=None, network=None, device="cpu", w_encoder=None, need: str = "a generator",
                feature_space: bool = False):
    """(inverter or None, generator): the one rule for which generator renders.

    With an encoder, its decoder renders unless `network` replaces it; without one, `network` is
    loaded as the generator. `need` names what asked, for the errors. A feature-space encoder (SFE) is refused
    unless the caller carries its feature tensor (`feature_space`).
    """
    from ...hub import resolve_reference
    from ...models import load_generator
    from ...models.encoders.sfe import is_feature_editor_checkpoint

    if encoder and not feature_space and is_feature_editor_checkpoint(resolve_reference(encoder, kind="encoder")):
        raise SgtoolError(f"{encoder} is a feature-space encoder (StyleFeatureEditor): its feature tensor belongs to "
                          f"one aligned crop, which {need} cannot keep; use a W+ encoder (e4e, ReStyle) here")
    if encoder:
        inverter = load_encoder(encoder, device=device, network=network, w_encoder=w_encoder)
        return inverter, inverter.generator
    if network:
        return None, load_generator(network, device=device)
    raise SgtoolError(f"{need} needs --network (a generator) or --encoder (whose decoder is used)")


@dataclass
class Inversion:
    """One image's result: the final W+ code and every intermediate one."""

    latents: torch.Tensor  # [num_ws, w_dim]
    step_latents: list[torch.Tensor]  # encoder steps, then the projection's final code
    seconds: float
    losses: list[float] = field(default_factory=list)  # projection loss per step (optimize / hybrid)
    step_images: list[torch.Tensor] = field(default_factory=list)  # [3, 256, 256] per step, aligned
    generator: torch.nn.Module | None = None  # hyperstyle: this image's adjusted generator (renders `latents`)
    features: dict[str, torch.Tensor] | None = None  # feature-space encoders (SFE): see InversionStep.features
    feature_layer: FeatureLayer | None = None  # where `features["features"]` goes in the generator
    diverged_at: int | None = None  # projection step whose loss was not finite (the latent before it is kept)
    noise: dict[str, torch.Tensor] | None = None  # W+N: the fitted StyleGAN2 noise maps `latents` renders with


def invert_target(target: torch.Tensor, method: str, generator=None, encoder=None, steps: int | None = None,
                  num_steps: int = 500, space: str = "w+", l2_weight: float = 1.0, seed: int = 0,
                  lpips_model=None, encoder_target: torch.Tensor | None = None,
                  callback: Callable[[ProjectionStep], bool | None] | None = None,
                  projector: Projector | dict | None = None, mask=None) -> Inversion:
    """Invert one aligned image `target` ([3, H, W] in [-1, 1]).

    encoder: ReStyle refinement steps; optimize: projection from w_avg; hybrid: projection from the
    encoder's final code. `encoder_target` is the encoder's 256x256 input when it should differ from
    a plain resize of `target`. `projector`: the schedule (a Projector, or a dict of its fields).
    `mask` ([H, W] in [0, 1], optimize / hybrid): match `target` only where it is 1, fill where it is 0.
    """
    if method not in METHODS:
        raise SgtoolError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if method != "optimize" and encoder is None:
        raise SgtoolError(f"--method {method} needs an encoder checkpoint: pass --encoder FILE.pt")
    generator = generator if generator is not None else getattr(encoder, "generator", None)
    if generator is None:
        raise SgtoolError("--method optimize needs a generator: pass --network FILE (or --encoder with a decoder)")
    schedule = projector if isinstance(projector, Projector) else Projector(**(projector or {}))
    start = time.perf_counter()
    step_latents, step_images, init, adjusted = [], [], None, None
    if encoder is not None and method != "optimize":
        x = encoder_target if encoder_target is not None else _resize(target, ENCODER_SIZE)
        results = encoder.invert(x.unsqueeze(0), steps=steps)
        step_latents = [r.latents[0].detach().cpu() for r in results]
        step_images = [r.images[0].detach().cpu() for r in results]
        init = step_latents[-1]
        adjusted = results[-1].adjusted_generator(0) if method == "hyperstyle" else None
    losses, diverged_at, noise = [], None, None
    if mask is not None and method in ENCODER_METHODS:
        raise SgtoolError(f"a mask weighs the projection's losses: use it with --method optimize or hybrid, not "
                          f"{method}")
    if method not in ENCODER_METHODS:
        result = project(generator, target, num_steps=num_steps, space=space, init_latent=init, l2_weight=l2_weight,
                         lpips_model=lpips_model, seed=seed, callback=callback, mask=mask,
                         **schedule.options(hybrid=method == "hybrid"))
        final = result.latents.detach().cpu()
        losses, diverged_at, noise = result.losses, result.diverged_at, result.noise
        step_latents.append(final)
        step_images.append(face_pool(render(with_noise(generator, noise), final[None]))[0].cpu())
    return Inversion(latents=step_latents[-1], step_latents=step_latents, seconds=time.perf_counter() - start,
                     losses=losses, step_images=step_images, generator=adjusted, diverged_at=diverged_at, noise=noise)


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    if image.shape[-1] == size and image.shape[-2] == size:
        return image
    mode = "area" if image.shape[-1] > size else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(image[None], size=(size, size), mode=mode, **kwargs)[0]


def check_method(method: str, encoder) -> None:
    """The method and the encoder checkpoint must go together (HyperStyle only with --method hyperstyle)."""
    if method != "optimize" and encoder is None:
        raise SgtoolError(f"--method {method} needs --encoder (a ReStyle, pSp, e4e or HyperStyle checkpoint)")
    is_hyperstyle = getattr(encoder, "family", None) == "hyperstyle"
    if getattr(encoder, "family", None) == "sfe" and method != "encoder":
        raise SgtoolError(f"{encoder.source} is a feature-space encoder (StyleFeatureEditor): run it with --method "
                          "encoder (a projection would not carry its feature tensor)")
    if method == "hyperstyle" and not is_hyperstyle:
        raise SgtoolError("--method hyperstyle needs a HyperStyle checkpoint as --encoder (e.g. hyperstyle_ffhq.pt)")
    if is_hyperstyle and method != "hyperstyle":
        raise SgtoolError(f"{encoder.source} is a HyperStyle checkpoint: run it with --method hyperstyle")


# ----------------------------------------------------------------------------------------------------------
# Photos to aligned faces


@dataclass
class Face:
    """What is inverted for one photo: its aligned face and, for StyleGAN3, the unaligned crop's transform."""

    aligned: np.ndarray  # uint8 HxWx3
    inverse_transform: np.ndarray | None = None  # synthesis.input.transform of the unaligned render
    faces_found: int | None = None
    quad: np.ndarray | None = None  # where the aligned face sits in the photo (None: the photo is the face)
    photo_shape: tuple[int, ...] | None = None
    mask: np.ndarray | None = None  # masked projection: [H, W] of `aligned`, 1 matched, 0 filled


def prepare_face(path: Path, options: InversionOptions, generator) -> Face:
    """The photo's largest face, aligned (or the photo itself with align off)."""
    rgb = read_image(path)
    if not options.align:
        return Face(rgb)
    from ..align.run import align_image

    faces = align_image(rgb, size=max(ENCODER_SIZE, int(generator.img_resolution)), recipe=options.align_recipe)
    if not faces:
        raise SgtoolError(f"{path}: no face found; pass --no-align if it is already an aligned crop")
    inverse = np.asarray(faces[0].inverse_transform, np.float32) if generator.kind == "stylegan3" else None
    return Face(faces[0].aligned, inverse, len(faces), quad=np.asarray(faces[0].quad), photo_shape=rgb.shape)


def invert_faces(faces: list[Face], options: InversionOptions, encoder, generator, lpips_model=None,
                 on_step: Callable[[ProjectionStep], bool | None] | None = None) -> list[Inversion]:
    """Invert aligned faces: one encoder pass for all of them, or one projection each."""
    if options.method in ENCODER_METHODS:
        start = time.perf_counter()
        results = encoder.invert(torch.stack([encoder_input(f.aligned) for f in faces]), steps=options.encoder_steps)
        per_image = (time.perf_counter() - start) / len(faces)
        out = []
        for i in range(len(faces)):
            latents = [r.latents[i].detach().cpu() for r in results]
            adjusted = results[-1].adjusted_generator(i) if options.method == "hyperstyle" else None
            features = results[-1].features
            out.append(Inversion(latents[-1], latents, per_image, step_images=[r.images[i].detach().cpu()
                                                                               for r in results],
                                 generator=adjusted, features=None if features is None else
                                 {key: value[i].detach().cpu() for key, value in features.items()},
                                 feature_layer=getattr(encoder, "layer", None)))
        return out
    return [invert_target(generator_target(f.aligned, generator.img_resolution), options.method, generator=generator,
                          encoder=encoder, steps=options.encoder_steps, num_steps=options.project_steps,
                          space=options.space, l2_weight=options.l2_weight, seed=options.seed,
                          lpips_model=lpips_model, encoder_target=encoder_input(f.aligned) if encoder else None,
                          callback=on_step, projector=options.projector, mask=f.mask) for f in faces]


def projection_lpips(options: InversionOptions, device):
    """The LPIPS-VGG the projection scores with (None for encoder-only methods)."""
    if options.method in ENCODER_METHODS:
        return None
    from ...losses import load_lpips

    return load_lpips("vgg", device, random_backbone=options.lpips_random_backbone)


# ----------------------------------------------------------------------------------------------------------
# The `sgtool invert` batch


def invert_batch(paths, settings: InvertSettings, shard: Shard | None = None, reporter: Reporter = SILENT,
                 encoder=None, generator=None) -> dict:
    """Invert image files/folders/globs into `settings.outdir`; returns the invert.json summary.

    A bad image is recorded and the batch goes on. `encoder` / `generator` are already loaded models
    (else they are loaded from the settings).
    """
    device = resolve_device(settings.device)
    if encoder is None and settings.method != "optimize" and not settings.encoder:
        raise SgtoolError(f"--method {settings.method} needs --encoder (a ReStyle, pSp, e4e or HyperStyle "
                          "checkpoint or registry name)")
    if encoder is None and generator is None:
        encoder, generator = load_models(settings.encoder, settings.network, device, settings.w_encoder,
                                         feature_space=True,
                                         need=f"--method {settings.method}")
    generator = generator if generator is not None else encoder.generator
    check_method(settings.method, encoder)
    if settings.projector.noise_steps and generator.kind != "stylegan2":
        raise SgtoolError(f"--noise-steps (W+N) needs a StyleGAN2 generator: {generator.kind} has no noise inputs; "
                          "leave it at 0")
    mask = read_mask(settings.mask) if settings.mask is not None else None
    outdir = Path(settings.outdir)
    batch = Batch("invert", _inputs(paths, reporter), outdir, shard, reporter)
    earlier = earlier_items(outdir / batch.file_name("invert.json"), settings.record(), batch.all_items,
                            ignored=OUTPUT_ONLY_SETTINGS)
    lpips_model = projection_lpips(settings, device)
    evaluator = _Evaluator(settings, device) if settings.metrics else None
    latents: dict[str, list[np.ndarray]] = {}

    def prepare(item: Item) -> Face:
        if mask is not None and settings.align:
            check_photo_size(mask, settings.mask, item.source)
        face = prepare_face(item.source, settings, generator)
        if mask is not None:
            face.mask = face_mask(mask, settings.mask, item.source, face, reporter.note)
        return face

    def process(chunk: list[tuple[Item, Face]]) -> list[dict]:
        records = []
        for (item, face), inversion in zip(chunk, _invert_chunk(chunk, settings, encoder, generator, lpips_model,
                                                                outdir, reporter)):
            latents[item.key] = [lat.numpy().astype(np.float32) for lat in inversion.step_latents]
            records.append(_write_outputs(item, face, inversion, settings, generator, outdir, evaluator))
        return records

    per_pass = settings.batch_size if settings.method in ENCODER_METHODS else 1
    report = batch.run_chunks(prepare, process, per_pass,
                              skip=(lambda item: _skip(item, outdir)) if settings.skip_existing else None)
    latents_file = write_latents_dict(outdir, latents, keep_existing=bool(report.of("skipped") or earlier),
                                       shard=shard)
    metrics = None
    if evaluator is not None:
        from ...metrics import summarize

        values = {r.item.name: r.record["metrics"] for r in report.of("ok") if "metrics" in r.record}
        if values:
            metrics = summarize(list(values.values()))
            write_json({"images": values, "mean": metrics}, outdir / batch.file_name("metrics.json"))
    settings_record = {**settings.record(), "encoder_type": getattr(encoder, "encoder_type", None)}
    return {**report.write("invert.json", settings_record, earlier, latents=str(latents_file) if latents_file else None,
                           metrics=metrics), "exit_code": report.exit_code}


# Settings that change what is written beside the latents, not the latents: runs differing only in these add up.
OUTPUT_ONLY_SETTINGS = ("outdir", "skip_existing", "save_steps", "save_video", "video_fps", "metrics",
                        "metrics_lpips_net", "id_model", "device", "kernels", "batch_size", "encoder_type")


def _inputs(paths, reporter: Reporter) -> list[Path]:
    """The images to invert: an `sgtool align` folder gives its aligned faces, not the unaligned crops it also holds."""
    crops = unaligned_crops(p for p in map(Path, map(str, paths)) if p.is_dir())
    files = collect(paths)
    kept = [path for path in files if path.resolve() not in crops]
    if len(kept) < len(files):
        reporter.note(f"left out {len(files) - len(kept)} unaligned crop(s) that alignment.json lists "
                      "(NAME_faceK_crop.png): their aligned faces are inverted")
    if not kept:
        raise SgtoolError("every input is an unaligned crop of `sgtool align`; give its NAME_faceK_aligned.png files")
    return kept


def _skip(item: Item, outdir: Path) -> dict | None:
    latent, recon = outdir / f"{item.name}_latent.npy", outdir / f"{item.name}_recon.png"
    return {"outputs": [str(latent), str(recon)]} if latent.is_file() and recon.is_file() else None


def _invert_chunk(chunk, settings: InvertSettings, encoder, generator, lpips_model, outdir: Path,
                  reporter: Reporter) -> list[Inversion]:
    faces = [face for _, face in chunk]
    if settings.method in ENCODER_METHODS:
        return invert_faces(faces, settings, encoder, generator)
    (item, face), = chunk
    writer = _video_writer(item, settings, generator, outdir) if settings.save_video else None
    target_frame = to_uint8(generator_target(face.aligned, generator.img_resolution)[None])[0]
    reporter.start(f"projecting {item.source.name}", settings.project_steps + settings.projector.noise_steps)

    def on_step(step: ProjectionStep):
        if writer is not None:
            writer.write(np.concatenate([target_frame, to_uint8(step.image)[0]], axis=1))
        reporter.advance(info=f"loss {step.loss:.4f}")

    ok = False
    try:
        inversions = invert_faces(faces, settings, encoder, generator, lpips_model, on_step)
        if inversions[0].diverged_at is not None:
            reporter.warn(f"{item.source}: the projection's loss was not finite at step {inversions[0].diverged_at}; "
                          "kept the latent of the step before (lower projector.initial_learning_rate)")
        ok = True
    finally:
        reporter.finish()
        if writer is not None:
            writer.close(ok=ok)
    return inversions


def _video_writer(item: Item, settings: InvertSettings, generator, outdir: Path):
    from fractions import Fraction

    from ..shared.video_io import VideoWriter

    size = int(generator.img_resolution)
    return VideoWriter(outdir / f"{item.name}_projection.mp4", width=2 * size, height=size,
                       fps=Fraction(settings.video_fps))


def _write_outputs(item: Item, face: Face, inversion: Inversion, settings: InvertSettings, generator, outdir: Path,
                   evaluator) -> dict:
    name = item.name
    latent = inversion.latents.to(torch.float32)
    outputs = [save_npy(latent.numpy(), outdir / f"{name}_latent.npy")]
    record: dict = {"latent": str(outputs[0])}
    if face.faces_found is not None:
        record["faces_found"] = face.faces_found
    if inversion.generator is not None:
        # HyperStyle: the latent belongs to this image's adjusted weights; `sgtool edit --network` takes it.
        from ...models import save_generator

        generator = inversion.generator
        outputs.append(save_generator(generator, outdir / f"{name}_generator.safetensors",
                                      metadata={"hyperstyle": generator.hyperstyle, "source": str(item.source)}))
        record["generator"] = str(outputs[-1])
    if inversion.features is not None:
        outputs.append(save_features(inversion.features, inversion.feature_layer,
                                     outdir / f"{name}_features.safetensors",
                                     {"source": str(item.source), "encoder": str(settings.encoder),
                                      "w_encoder": str(settings.w_encoder), "network": str(settings.network)}))
        record["features"] = str(outputs[-1])
        recon = render_with_feature(generator, latent[None], inversion.features["features"][None],
                                    inversion.feature_layer)
    else:
        if inversion.noise is not None:  # W+N: the reconstruction is the latent with its fitted noise maps
            outputs.append(save_noise(inversion.noise, outdir / f"{name}_noise.safetensors", item.source))
            record["noise"] = str(outputs[-1])
        recon = render(with_noise(generator, inversion.noise), latent[None])
    outputs.append(save_image(recon[0], outdir / f"{name}_recon.png"))
    if face.mask is not None:
        record["mask"] = {"file": str(settings.mask), **region_errors(
            recon, generator_target(face.aligned, recon.shape[-1]), face.mask)}
    record["recon"] = str(outputs[-1])
    if face.inverse_transform is not None and inversion.features is not None:
        # F is the aligned crop's activation; another input transform would move the layers before it, not F.
        record.update(inverse_transform=face.inverse_transform.tolist(),
                      recon_unaligned="not written: a feature-space inversion renders the aligned crop only")
    elif face.inverse_transform is not None:
        outputs.append(save_image(render(generator, latent[None], torch.from_numpy(face.inverse_transform))[0],
                                  outdir / f"{name}_recon_unaligned.png"))
        record.update(recon_unaligned=str(outputs[-1]), inverse_transform=face.inverse_transform.tolist())
    if settings.save_steps and inversion.step_images:
        tiles = [to_uint8(img[None])[0] for img in inversion.step_images]
        tiles.append(resized(face.aligned, ENCODER_SIZE))
        outputs.append(save_image(image_grid(np.stack(tiles), cols=len(tiles)), outdir / f"{name}_steps.png"))
        record["steps"] = str(outputs[-1])
    if settings.save_video and settings.method not in ENCODER_METHODS:
        outputs.append(outdir / f"{name}_projection.mp4")
        record["video"] = str(outputs[-1])
    record.update(num_steps=len(inversion.step_latents), seconds=round(inversion.seconds, 4))
    if inversion.losses:
        record["final_loss"] = inversion.losses[-1]
    if inversion.diverged_at is not None:
        record["diverged_at_step"] = inversion.diverged_at
    if evaluator is not None:
        record["metrics"] = evaluator(recon, face.aligned, inversion.seconds)
    return {"outputs": [str(p) for p in outputs], **record}


class _Evaluator:
    def __init__(self, settings: InvertSettings, device):
        from ...losses import load_lpips
        from ...metrics import IdentityModel

        self.lpips = load_lpips(settings.metrics_lpips_net, device, random_backbone=settings.lpips_random_backbone)
        self.identity = IdentityModel.load(settings.id_model, device=device) if settings.id_model else None

    def __call__(self, recon: torch.Tensor, aligned: np.ndarray, seconds: float) -> dict:
        from ...metrics import compare_images

        target = generator_target(aligned, max(ENCODER_SIZE, recon.shape[-1]))[None]
        values = compare_images(recon.cpu(), target, lpips_model=self.lpips, id_model=self.identity)[0]
        values["seconds"] = round(seconds, 4)
        return values
