"""Pivotal Tuning Inversion (Roich et al., 2021): fine-tune the generator around pivot latents.

The pivots (W+ latents from `sgtool invert`) stay fixed; the synthesis network is tuned so that
each pivot renders its photo (LPIPS + L2). A locality regulariser keeps the tuned generator
equal to the frozen original at latents far from the pivot, so edits keep working. StyleGAN3's
Fourier-feature input layer stays frozen, and unaligned crops are reconstructed through their
landmarks transform. Several images can share one tuned generator (`joint`, the video case),
with mini-batches and resumable checkpoints.

Randomness (mini-batch order, locality latents) is derived from (seed, step), so a resumed run
draws exactly what an uninterrupted run would have drawn.
"""

from __future__ import annotations

import copy
import contextlib
import functools
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SgtoolError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "sgtool-tune-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class TuneSettings:
    """PTI's hyper-parameters; the defaults are those of PTI's release (threshold as stylegan3-editing)."""

    steps: int = 350
    lr: float = 3e-4
    l2_weight: float = 1.0
    lpips_weight: float = 1.0
    lpips_threshold: float = 0.06
    lpips_net: str = "alex"
    random_lpips_backbone: bool = False  # tests only: LPIPS without ImageNet weights
    locality: bool = True
    locality_interval: int = 1
    locality_alpha: float = 30.0
    locality_psi: float = 0.5
    locality_samples: int = 1
    locality_l2_weight: float = 0.1
    locality_lpips_weight: float = 0.1
    batch_size: int = 1
    seed: int = 0
    save_every: int | None = None
    noise_mode: str = "const"
    checkpoint_activations: bool | None = None  # None: on from 512 px (a 1024 step then fits in 24 GB)

    def __post_init__(self):
        for name in ("steps", "batch_size", "locality_interval", "locality_samples"):
            if int(getattr(self, name)) < 1 and not (name == "steps" and self.steps == 0):
                raise SgtoolError(f"tune: {name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise SgtoolError(f"tune: --lr must be positive, got {self.lr}")
        if self.save_every is not None and self.save_every < 1:
            raise SgtoolError(f"tune: --save-every must be at least 1, got {self.save_every}")
        if self.noise_mode not in ("const", "random", "none"):
            raise SgtoolError(f"tune: noise_mode must be const, random or none, got {self.noise_mode!r}")

    def fingerprint_fields(self) -> dict:
        """Settings that change the optimisation path (a checkpoint is only resumed under the same ones)."""
        skip = {"steps", "save_every", "lpips_threshold", "checkpoint_activations"}
        return {k: v for k, v in asdict(self).items() if k not in skip}


@dataclass
class TuneTarget:
    """One photo to reproduce: its image, its pivot latent and, for StyleGAN3, its input transform."""

    name: str
    image: torch.Tensor  # [3, R, R] in [-1, 1]
    latent: torch.Tensor  # [num_ws, w_dim]
    transform: torch.Tensor | None = None  # [3, 3]: what synthesis.input.transform holds for this crop
    source: str = ""


@dataclass
class TuneResult:
    generator: nn.Module
    steps_done: int
    stopped_early: bool
    interrupted: bool
    resumed_from: int | None
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def tunable_parameters(generator: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The synthesis network's parameters, StyleGAN3's Fourier-feature input layer excluded.

    The mapping network is left out: the loss never passes through it (pivots are given in W+).
    """
    return [(f"synthesis.{name}", p) for name, p in generator.synthesis.named_parameters()
            if not (generator.kind == "stylegan3" and name.startswith("input."))]


def render(generator, ws: torch.Tensor, transforms: torch.Tensor | None, noise_mode: str = "const") -> torch.Tensor:
    extra = {} if transforms is None else {"transform": transforms}
    return generator.synthesis(ws, noise_mode=noise_mode, **extra)


# Working-set budget for one StyleGAN3 layer's upsampled intermediate (per chunk of output channels).
CHUNK_BYTES = 256 * 2 ** 20


@contextlib.contextmanager
def activation_checkpointing(generator: nn.Module, enabled: bool = True, chunk_bytes: int = CHUNK_BYTES):
    """Bound the memory of high-resolution synthesis, for training and for plain renders.

    StyleGAN3 layers run in chunks of output channels (every op in a layer after the input's
    modulation is per output channel, so chunks are exact): a 1024 px layer's 2x/4x-upsampled
    intermediates are several GB each for all channels at once. With gradients on, each chunk is
    also recomputed in backward instead of stored. StyleGAN2 blocks are checkpointed whole.
    The wrappers live on the instances and are removed on exit.
    """
    wrapped = []
    if enabled:
        for child in generator.synthesis.children():
            if generator.kind == "stylegan3":
                if child is generator.synthesis.input:
                    continue
                child.forward = functools.partial(_chunked_sg3_layer, child, _channel_chunk(child, chunk_bytes))
            else:
                child.forward = functools.partial(_checkpointed, child.forward)
            wrapped.append(child)
    try:
        yield generator
    finally:
        for child in wrapped:
            del child.forward


def _channel_chunk(layer, chunk_bytes: int) -> int:
    side = max(1, int(layer.in_size.max()) * layer.up_factor + layer.padding[0] + layer.padding[1])
    return max(1, min(layer.out_channels, chunk_bytes // (4 * side * side)))


class _OutputSlice:
    """A SynthesisLayer seen through a slice of its output channels (weights and bias sliced, rest shared)."""

    def __init__(self, layer, start: int, stop: int):
        self._layer = layer
        self.weight = layer.weight[start:stop]
        self.bias = layer.bias[start:stop]
        self.out_channels = stop - start

    def __getattr__(self, name):
        return getattr(self._layer, name)


def _layer_slice(layer, start, stop, x, w, kwargs):
    return type(layer).forward(_OutputSlice(layer, start, stop), x, w, **kwargs)


def _chunked_sg3_layer(layer, chunk: int, x, w, **kwargs):
    if kwargs.get("update_emas") or chunk >= layer.out_channels:
        return _checkpointed(type(layer).forward.__get__(layer), x, w, **kwargs)
    from torch.utils.checkpoint import checkpoint

    parts = []
    for start in range(0, layer.out_channels, chunk):
        stop = min(start + chunk, layer.out_channels)
        if torch.is_grad_enabled():
            parts.append(checkpoint(_layer_slice, layer, start, stop, x, w, kwargs, use_reentrant=False))
        else:
            parts.append(_layer_slice(layer, start, stop, x, w, kwargs))
    return torch.cat(parts, dim=1)


def _checkpointed(forward, *args, **kwargs):
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    from torch.utils.checkpoint import checkpoint

    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def _derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _lpips_per_image(lpips_model, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return lpips_model(a, b).reshape(a.shape[0])


def _hash_tensor(h, tensor: torch.Tensor | None) -> None:
    if tensor is not None:
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())


class PivotalTuner:
    """Tunes a copy of `generator` on `targets`; the original stays untouched as the locality anchor."""

    def __init__(self, generator: nn.Module, targets: Sequence[TuneTarget], settings: TuneSettings,
                 lpips_model: nn.Module | None = None, device: torch.device | str | None = None):
        if not targets:
            raise SgtoolError("tune: no targets to tune on")
        if generator.c_dim:
            raise SgtoolError("tune supports unconditional generators only; this network needs class labels")
        self.device = torch.device(device) if device is not None else next(generator.parameters()).device
        self.settings = settings
        self.targets = list(targets)
        self.original = generator.to(self.device).eval().requires_grad_(False)
        self.tuned = copy.deepcopy(self.original)
        self.params = [p for _, p in tunable_parameters(self.tuned)]
        for p in self.params:
            p.requires_grad_(True)
        self.optimizer = torch.optim.Adam(self.params, lr=settings.lr)
        if lpips_model is None:
            from ..losses import load_lpips

            lpips_model = load_lpips(settings.lpips_net, self.device, random_backbone=settings.random_lpips_backbone)
        self.lpips = lpips_model

        shape = (generator.num_ws, generator.w_dim)
        for target in self.targets:
            if tuple(target.latent.shape) != shape:
                raise SgtoolError(f"{target.source or target.name}: latent has shape {list(target.latent.shape)} "
                                  f"but the generator needs {list(shape)}; use the generator it was inverted with")
            if tuple(target.image.shape) != (3, generator.img_resolution, generator.img_resolution):
                raise SgtoolError(f"{target.source or target.name}: target must be a 3x{generator.img_resolution}"
                                  f"x{generator.img_resolution} image, got {list(target.image.shape)}")
            if target.transform is not None and generator.kind != "stylegan3":
                raise SgtoolError("landmarks transforms need a StyleGAN3 generator (StyleGAN2 has no input "
                                  "transform); drop --transforms")
        self.pivots = torch.stack([t.latent.to(torch.float32) for t in self.targets]).to(self.device)
        self.images = torch.stack([t.image.to(torch.float32) for t in self.targets]).to(self.device)
        has_transform = any(t.transform is not None for t in self.targets)
        self.transforms = None
        if has_transform:
            self.transforms = torch.stack([torch.eye(3) if t.transform is None else t.transform.to(torch.float32)
                                           for t in self.targets]).to(self.device)
        self.last_lpips = [math.nan] * len(self.targets)
        self.history: list[dict] = []
        self.step_index = 0
        checkpointing = settings.checkpoint_activations
        self.checkpoint_activations = generator.img_resolution >= 512 if checkpointing is None else bool(checkpointing)

    # Schedule -----------------------------------------------------------------------------------

    def batch_indices(self, step: int) -> torch.Tensor:
        """Shuffled mini-batches, a fresh permutation every pass over the targets."""
        count = len(self.targets)
        batch = min(self.settings.batch_size, count)
        per_epoch = -(-count // batch)
        epoch, position = divmod(step, per_epoch)
        rng = torch.Generator().manual_seed(_derived_seed(self.settings.seed, epoch, 0))
        order = torch.randperm(count, generator=rng) if count > 1 else torch.zeros(1, dtype=torch.long)
        return order[position * batch:(position + 1) * batch]

    def locality_codes(self, pivots: torch.Tensor, step: int) -> torch.Tensor:
        """Latents at distance alpha from each pivot, towards random (truncated) W samples."""
        s = self.settings
        rng = torch.Generator().manual_seed(_derived_seed(s.seed, step, 1))
        z = torch.randn([pivots.shape[0] * s.locality_samples, self.original.z_dim], generator=rng).to(self.device)
        with torch.no_grad():
            w_random = self.original.mapping(z, None, truncation_psi=s.locality_psi)
        anchors = pivots.repeat_interleave(s.locality_samples, dim=0)
        direction = w_random - anchors
        norm = direction.flatten(1).norm(dim=1).clamp_min(1e-8).view(-1, 1, 1)
        return anchors + s.locality_alpha * direction / norm

    # One step -----------------------------------------------------------------------------------

    def _batch_transforms(self, indices: torch.Tensor, repeat: int = 1):
        if self.transforms is None:
            return None
        return self.transforms[indices].repeat_interleave(repeat, dim=0)

    def step(self) -> dict | None:
        """One PTI step. Returns its losses, or None when the LPIPS threshold is reached (no update)."""
        s = self.settings
        step = self.step_index
        indices = self.batch_indices(step)
        pivots, targets = self.pivots[indices], self.images[indices]
        transforms = self._batch_transforms(indices)
        self.optimizer.zero_grad(set_to_none=True)
        saving = self.checkpoint_activations
        with activation_checkpointing(self.tuned, saving), activation_checkpointing(self.original, saving):
            images = render(self.tuned, pivots, transforms, s.noise_mode)
            mse = F.mse_loss(images, targets)
            lpips_each = _lpips_per_image(self.lpips, images, targets)
            for i, value in zip(indices.tolist(), lpips_each.detach().cpu().tolist()):
                self.last_lpips[i] = value
            # Joint runs stop once every image's latest LPIPS is below the threshold (unseen ones are NaN).
            if all(value < s.lpips_threshold for value in self.last_lpips):
                return None
            loss = s.l2_weight * mse + s.lpips_weight * lpips_each.mean()
            # Backward per term: only one rendering graph is alive at a time (memory at 1024 px).
            loss.backward()
            del images
            record = {"step": step + 1, "loss": loss.item(), "mse": mse.item(), "lpips": lpips_each.mean().item()}
            if s.locality and step % s.locality_interval == 0:
                codes = self.locality_codes(pivots, step)
                code_transforms = self._batch_transforms(indices, s.locality_samples)
                with torch.no_grad():
                    anchor = render(self.original, codes, code_transforms, "none")
                moved = render(self.tuned, codes, code_transforms, "none")
                locality = (s.locality_l2_weight * F.mse_loss(moved, anchor)
                            + s.locality_lpips_weight * _lpips_per_image(self.lpips, moved, anchor).mean())
                locality.backward()
                record["locality"] = locality.item()
                record["loss"] += record["locality"]
        self.optimizer.step()
        self.step_index = step + 1
        self.history.append(record)
        return record

    # Checkpoints --------------------------------------------------------------------------------

    def fingerprint(self) -> str:
        """Identity of the inputs and settings: a checkpoint only resumes the run that wrote it."""
        h = hashlib.sha256()
        h.update(json.dumps({"kind": self.original.kind, "init_kwargs": self.original.init_kwargs,
                             "settings": self.settings.fingerprint_fields(),
                             "names": [t.name for t in self.targets]}, sort_keys=True, default=str).encode())
        for tensor in self.original.state_dict().values():
            _hash_tensor(h, tensor)
        for tensor in (self.pivots, self.images, self.transforms):
            _hash_tensor(h, tensor)
        return h.hexdigest()

    def save_checkpoint(self, path) -> Path:
        from ..utils.io import atomic_path

        state = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": self.step_index,
            "fingerprint": self.fingerprint(),
            "generator": {k: v.detach().cpu() for k, v in self.tuned.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "history": self.history, "last_lpips": self.last_lpips,
            # Batch order and locality latents are functions of (seed, step): this is the whole RNG state.
            "rng": {"seed": self.settings.seed, "scheme": "SeedSequence([seed, step or epoch, stream])"},
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        return Path(path)

    def load_checkpoint(self, path) -> int:
        path = Path(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # any unreadable file gets the same advice
            raise SgtoolError(f"tune checkpoint {path} is unreadable ({type(exc).__name__}); delete it or pass "
                              "--no-resume") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise SgtoolError(f"{path} is not an sgtool tune checkpoint; delete it or pass --no-resume")
        if state.get("version") != CHECKPOINT_VERSION:
            raise SgtoolError(f"{path} was written by another sgtool version; delete it or pass --no-resume")
        if state["fingerprint"] != self.fingerprint():
            raise SgtoolError(f"{path} belongs to a run with other images, latents, network or settings; pass "
                              "--no-resume to start over, or use another --outdir")
        self.tuned.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_index = int(state["step"])
        self.history = list(state["history"])
        self.last_lpips = [float(v) for v in state["last_lpips"]]
        return self.step_index

    # Whole run ----------------------------------------------------------------------------------

    def run(self, checkpoint_path=None, resume: bool | None = None,
            should_stop: Callable[[int], bool] | None = None,
            on_step: Callable[[dict], None] | None = None) -> TuneResult:
        """Tune until `settings.steps`, the LPIPS threshold, or `should_stop(step)` (then checkpointed).

        resume: True = continue from `checkpoint_path` (must exist); None = continue if it exists;
        False = start over.
        """
        start_time = time.perf_counter()
        resumed_from = None
        checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        if checkpoint_path is not None and resume is not False:
            if checkpoint_path.is_file():
                resumed_from = self.load_checkpoint(checkpoint_path)
            elif resume:
                raise SgtoolError(f"--resume: no checkpoint at {checkpoint_path}")
        stopped_early = interrupted = False
        save_every = self.settings.save_every
        while self.step_index < self.settings.steps:
            record = self.step()
            if record is None:
                stopped_early = True
                break
            if on_step is not None:
                on_step(record)
            if checkpoint_path is not None and save_every and self.step_index % save_every == 0:
                self.save_checkpoint(checkpoint_path)
            if should_stop is not None and should_stop(self.step_index) and self.step_index < self.settings.steps:
                if checkpoint_path is not None:
                    self.save_checkpoint(checkpoint_path)
                interrupted = True
                break
        self.tuned.requires_grad_(False)
        return TuneResult(generator=self.tuned, steps_done=self.step_index, stopped_early=stopped_early,
                          interrupted=interrupted, resumed_from=resumed_from, history=list(self.history),
                          seconds=time.perf_counter() - start_time)


# Evaluation and outputs ---------------------------------------------------------------------------

@torch.no_grad()
def evaluate(generator, targets: Sequence[TuneTarget], lpips_model, device, noise_mode: str = "const"):
    """Per-target reconstruction (rendered with its transform) and its MSE, PSNR and LPIPS to the target."""
    renders, metrics = [], []
    with activation_checkpointing(generator, generator.img_resolution >= 512):
        for target in targets:
            ws = target.latent.to(device, torch.float32).unsqueeze(0)
            transform = None if target.transform is None else target.transform.to(device, torch.float32)[None]
            image = render(generator, ws, transform, noise_mode)
            goal = target.image.to(device, torch.float32).unsqueeze(0)
            mse = float(F.mse_loss(image, goal))
            metrics.append({"mse": mse, "psnr": 10 * math.log10(4.0 / max(mse, 1e-12)),
                            "lpips": float(_lpips_per_image(lpips_model, image, goal)[0])})
            renders.append(image[0].cpu())
    return renders, metrics


def plot_loss_curve(history: list[dict], path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils.io import atomic_path

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    steps = [r["step"] for r in history]
    for key in ("loss", "mse", "lpips", "locality"):
        values = [r.get(key) for r in history]
        if steps and any(v is not None for v in values):
            # Log scale: zero (a locality term at the untouched first step) and absent values are gaps.
            ax.plot(steps, [v if v is not None and v > 0 else math.nan for v in values], label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if steps:
        ax.set_yscale("log")
    ax.set_title("PTI losses" if steps else "PTI losses (no optimisation step was needed)")
    if steps:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def tune_and_save(generator, targets: Sequence[TuneTarget], settings: TuneSettings, outdir, *,
                  network: str = "", export_pkl: bool = False, resume: bool | None = None,
                  lpips_model=None, device=None, should_stop: Callable[[int], bool] | None = None,
                  on_step: Callable[[dict], None] | None = None, extra_config: dict | None = None,
                  report_extra: dict | None = None) -> dict:
    """Tune one generator on `targets` and write everything about it into `outdir`.

    Writes tuned_generator.safetensors (+ .pkl with export_pkl), NAME_before.png / NAME_after.png,
    loss_curve.png and tune.json (config, per-image metrics before and after). An interrupted run
    leaves checkpoint.pt, which the next call resumes (unless resume=False); it is removed once
    the outputs are written.
    """
    from ..models import save_generator
    from ..utils.io import save_image, write_json
    from .. import __version__

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    tuner = PivotalTuner(generator, targets, settings, lpips_model=lpips_model, device=device)
    checkpoint = outdir / CHECKPOINT_NAME
    before_renders, before = evaluate(tuner.original, tuner.targets, tuner.lpips, tuner.device, settings.noise_mode)
    result = tuner.run(checkpoint, resume=resume, should_stop=should_stop, on_step=on_step)
    config = {**asdict(settings), **(extra_config or {}), "network": network, "sgtool_version": __version__}
    if result.interrupted:
        return {"status": "interrupted", "steps_done": result.steps_done, "checkpoint": str(checkpoint),
                "outdir": str(outdir), "config": config}
    after_renders, after = evaluate(result.generator, tuner.targets, tuner.lpips, tuner.device, settings.noise_mode)

    images = []
    for target, old, new, m_before, m_after in zip(tuner.targets, before_renders, after_renders, before, after):
        images.append({
            "name": target.name, "source": target.source, "transform": target.transform is not None,
            "before": m_before, "after": m_after,
            "before_image": str(save_image(old, outdir / f"{target.name}_before.png")),
            "after_image": str(save_image(new, outdir / f"{target.name}_after.png")),
        })
    metadata = {"tuned_by": "sgtool tune (PTI)", "base_network": network, "images": [t.name for t in targets],
                "steps": result.steps_done, "seed": settings.seed}
    outputs = {"generator": str(save_generator(result.generator, outdir / "tuned_generator.safetensors", metadata))}
    if export_pkl:
        from ..models.nvidia_pickle import save_nvidia_pickle

        outputs["pkl"] = str(save_nvidia_pickle(result.generator, outdir / "tuned_generator.pkl"))
    outputs["loss_curve"] = str(plot_loss_curve(result.history, outdir / "loss_curve.png"))
    summary = {
        "status": "done", "outdir": str(outdir), "steps_done": result.steps_done,
        "stopped_early": result.stopped_early, "resumed_from_step": result.resumed_from,
        "seconds": round(result.seconds, 3), "outputs": outputs, "images": images,
        "mean_before": _mean_metrics(before), "mean_after": _mean_metrics(after),
        "history": result.history, "config": config, **(report_extra or {}),
    }
    write_json(summary, outdir / "tune.json")
    checkpoint.unlink(missing_ok=True)
    summary["generator"] = result.generator
    return summary


def _mean_metrics(metrics: list[dict]) -> dict:
    return {key: float(np.mean([m[key] for m in metrics])) for key in metrics[0]} if metrics else {}


# Inputs ---------------------------------------------------------------------------------------------

def collect_images(path) -> list[Path]:
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SgtoolError(f"{path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return files
    if path.is_file():
        return [path]
    raise SgtoolError(f"{path} does not exist; give an image file or a directory of images")


def load_target_image(path, resolution: int) -> torch.Tensor:
    """An RGB photo as [3, R, R] in [-1, 1] (EXIF orientation applied; resized to the generator's size)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                img = Image.fromarray((np.asarray(img, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8))
            img = img.convert("RGB")
            if img.size != (resolution, resolution):
                if img.width != img.height:
                    raise SgtoolError(f"{path} is {img.width}x{img.height}, not square; give the aligned image "
                                      "or the unaligned crop that `sgtool align` writes")
                img = img.resize((resolution, resolution), Image.LANCZOS)
            array = np.asarray(img, dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SgtoolError(f"{path} is not a readable image ({type(exc).__name__})") from None
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1


def _key_variants(name: str) -> list[str]:
    p = Path(name)
    return [name, p.name, p.stem, p.stem.removesuffix("_latent")]


def read_latents(path, num_ws: int, w_dim: int) -> dict[str, np.ndarray]:
    """Latents from a file (our NAME_latent.npy or a stylegan3-editing latents.npy dict) or a folder of
    NAME_latent.npy files."""
    from ..latents import load_latents

    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*_latent.npy"))
        if not files:
            dict_file = path / "latents.npy"
            if dict_file.is_file():
                return load_latents(dict_file, num_ws, w_dim)
            raise SgtoolError(f"{path} holds no NAME_latent.npy files or latents.npy; run `sgtool invert` first")
        out = {}
        for file in files:
            out.update(load_latents(file, num_ws, w_dim))
        return out
    return load_latents(path, num_ws, w_dim)


@dataclass
class TransformTable:
    """Input transforms by image name, and (from our alignment.json) which aligned image each crop came from."""

    transforms: dict[str, np.ndarray]
    aligned_of: dict[str, str]
    aligned_path: dict[str, str] = field(default_factory=dict)

    def lookup(self, image: Path):
        for key in (image.name, image.stem):
            if key in self.transforms:
                return self.transforms[key]
        return None


def read_transforms(path) -> TransformTable:
    """`alignment.json` from `sgtool align` (targets are its crops, paired with their aligned images) or
    stylegan3-editing's landmarks-transforms .npy dict (targets named by its keys)."""
    from .align import read_landmarks_transforms

    path = Path(path)
    if not path.is_file():
        raise SgtoolError(f"--transforms: {path} does not exist")
    transforms, aligned_of, aligned_path = {}, {}, {}
    for entry in read_landmarks_transforms(path):
        matrix = entry.inverse_transform.astype(np.float32)
        if path.suffix.lower() != ".json":
            transforms[entry.name] = matrix
            continue
        if entry.crop is None:
            raise SgtoolError(f"--transforms: {path} has a face without 'crop'; write it again with `sgtool align`")
        transforms[entry.crop] = matrix
        aligned_of[entry.crop] = entry.name
        aligned_path[entry.crop] = entry.aligned_path
    return TransformTable(transforms, aligned_of, aligned_path)


def match_targets(images: Sequence[Path], latents: dict[str, np.ndarray], resolution: int,
                  transforms: TransformTable | None = None) -> tuple[list[TuneTarget], list[dict]]:
    """Pair every image with its latent (by file name or stem; a crop also by its aligned image) and
    transform. Returns the targets and one failure record per image that could not be used."""
    index: dict[str, np.ndarray] = {}
    for key, value in latents.items():
        for variant in _key_variants(key):
            index.setdefault(variant, value)
    targets, failures = [], []
    for image in images:
        keys = _key_variants(image.name)
        if transforms is not None and image.name in transforms.aligned_of:
            keys += _key_variants(transforms.aligned_of[image.name])
        latent = next((index[k] for k in keys if k in index), None)
        if latent is None and len(images) == 1 and len(latents) == 1:
            latent = next(iter(latents.values()))
        if latent is None:
            failures.append({"source": str(image), "error": f"no latent for {image.name} in the latents file"})
            continue
        transform = None
        if transforms is not None:
            transform = transforms.lookup(image)
            if transform is None:
                failures.append({"source": str(image), "error": f"no transform for {image.name} in --transforms"})
                continue
        try:
            pixels = load_target_image(image, resolution)
        except SgtoolError as exc:
            failures.append({"source": str(image), "error": str(exc)})
            continue
        targets.append(TuneTarget(name=image.stem, image=pixels, latent=torch.from_numpy(np.asarray(latent)),
                                  transform=None if transform is None else torch.from_numpy(transform),
                                  source=str(image)))
    return targets, failures


def invert_for_tuning(images: Sequence[Path], generator, method: str, *, encoder=None, encoder_steps: int = 5,
                      project_steps: int = 450, transforms: TransformTable | None = None, seed: int = 0,
                      device="cpu", lpips_model=None) -> dict[str, np.ndarray]:
    """Pivot latents for `images` when none were given, through `sgtool invert`'s pipeline: the encoder,
    PTI's own first inversion (`optimize`: projection into W), or the encoder's latent refined by
    projection (`hybrid`, in W+). Keys are image file names.

    Inversion works on aligned faces: for an unaligned crop listed in alignment.json, its aligned
    image is inverted (the crop stays the tuning target).
    """
    from .invert import invert_target, load_encoder

    if method not in ("encoder", "optimize", "hybrid"):
        raise SgtoolError(f"--method must be encoder, optimize or hybrid, got {method!r}")
    if method != "optimize" and encoder is None:
        raise SgtoolError(f"--method {method} needs --encoder CHECKPOINT (or pass --latents from `sgtool invert`)")
    inverter = None
    if method != "optimize":
        # An already loaded inverter (its decoder being `generator`) or a checkpoint path.
        inverter = encoder if hasattr(encoder, "invert") else load_encoder(encoder, device, network=generator)
    latents = {}
    for image in images:
        source = image
        if transforms is not None and image.name in transforms.aligned_path:
            source = Path(transforms.aligned_path[image.name])
        target = load_target_image(source, generator.img_resolution).to(device)
        result = invert_target(target, method, generator=generator, encoder=inverter, steps=encoder_steps,
                               num_steps=project_steps, space="w" if method == "optimize" else "w+", seed=seed,
                               lpips_model=lpips_model)
        latents[image.name] = result.latents.detach().cpu().numpy()
    return latents
