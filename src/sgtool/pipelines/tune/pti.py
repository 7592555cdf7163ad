"""Pivotal Tuning Inversion (Roich et al., 2021): fine-tune the generator around pivot latents.

The pivots (W+ latents) stay fixed; the synthesis network is tuned so that each pivot renders its
photo (LPIPS + L2). An optional locality regulariser (off in PTI's release) keeps the tuned
generator equal to the frozen original at latents far from the pivot. StyleGAN3's Fourier-feature
input layer stays frozen, and unaligned crops are reconstructed through their landmarks transform.
Several images can share one tuned generator (joint runs, the video case), with mini-batches and
resumable checkpoints.

Randomness (mini-batch order, locality latents) is derived from (seed, step), so a resumed run
draws exactly what an uninterrupted run would have drawn. A step whose loss is not finite stops
the run with the last good state saved.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ... import kernels
from ...device import autocast, resolve_precision
from ...errors import SgtoolError
from ...settings import PtiOptions
from ..shared.memory import activation_checkpointing, available_memory, layers_to_recompute, recomputable_bytes
from ..shared.render import synthesize

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "sgtool-tune-checkpoint"
CHECKPOINT_VERSION = 1


class NonFiniteLoss(Exception):
    def __init__(self, step: int, value: float):
        super().__init__(f"non-finite loss {value} at step {step}")
        self.step, self.value = step, value


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


def _derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _lpips_per_image(lpips_model, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return lpips_model(a, b).reshape(a.shape[0])


def _hash_tensor(h, tensor: torch.Tensor | None) -> None:
    if tensor is not None:
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())


class PivotalTuner:
    """Tunes a copy of `generator` on `targets`; the original stays untouched as the locality anchor."""

    def __init__(self, generator: nn.Module, targets: Sequence[TuneTarget], settings: PtiOptions,
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
            from ...losses import load_lpips

            lpips_model = load_lpips(settings.lpips_net, self.device, random_backbone=settings.lpips_random_backbone,
                                     seed=settings.seed)
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
        self.precision = resolve_precision(settings.precision, self.device)
        self.recomputed_layers = self._layers_to_recompute(generator, settings)

    def _layers_to_recompute(self, generator, settings: PtiOptions) -> list[str]:
        """Activation checkpointing where memory needs it (auto): the largest layers are recomputed in
        backward until the rest of one step's saved activations fit in half the memory now available;
        recomputing costs a second forward (a StyleGAN3-R 1024 px step measured 26.7 s recomputing every
        layer, 15.3 s none)."""
        batch = settings.batch_size * (settings.locality_samples if settings.locality else 1)
        sizes = recomputable_bytes(generator, batch, kernels.compiled_for(self.device), self.device.type)
        if settings.checkpoint_activations != "auto":
            return list(sizes) if settings.checkpoint_activations else []
        free = available_memory(self.device)
        return layers_to_recompute(sizes, None if free is None else free // 2)

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
        recomputed = self.recomputed_layers
        with activation_checkpointing(self.tuned, layers=recomputed), \
                activation_checkpointing(self.original, layers=recomputed):
            with autocast(self.precision, self.device):
                images = synthesize(self.tuned, pivots, transforms, s.noise_mode)
                lpips_each = _lpips_per_image(self.lpips, images, targets).float()
            images = images.float()
            mse = F.mse_loss(images, targets)
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
                with autocast(self.precision, self.device):
                    with torch.no_grad():
                        anchor = synthesize(self.original, codes, code_transforms, "none").float()
                    moved = synthesize(self.tuned, codes, code_transforms, "none")
                    close = _lpips_per_image(self.lpips, moved, anchor).float().mean()
                locality = s.locality_l2_weight * F.mse_loss(moved.float(), anchor) + s.locality_lpips_weight * close
                locality.backward()
                record["locality"] = locality.item()
                record["loss"] += record["locality"]
        # A NaN or infinite loss or gradient would poison the weights: refuse the update, keep the last good state.
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, float("inf")))
        if not (math.isfinite(record["loss"]) and math.isfinite(grad_norm)):
            raise NonFiniteLoss(step + 1, record["loss"] if not math.isfinite(record["loss"]) else grad_norm)
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
        from ...utils.io import atomic_path

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
            on_step: Callable[[dict], None] | None = None,
            on_resume: Callable[[int], None] | None = None) -> TuneResult:
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
                if on_resume is not None:
                    on_resume(resumed_from)
            elif resume:
                raise SgtoolError(f"--resume: no checkpoint at {checkpoint_path}")
        stopped_early = interrupted = False
        save_every = self.settings.save_every
        while self.step_index < self.settings.steps:
            try:
                record = self.step()
            except NonFiniteLoss as exc:
                kept = "no step had completed" if self.step_index == 0 else "nothing was saved"
                if checkpoint_path is not None and self.step_index > 0:
                    kept = f"the last good state (step {self.step_index}) is in {self.save_checkpoint(checkpoint_path)}"
                raise SgtoolError(f"tune: the loss became {exc.value} at step {exc.step}; stopped, {kept}; lower "
                                  "--lr or check the images and latents") from None
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
            image = synthesize(generator, ws, transform, noise_mode)
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

    from ...utils.io import atomic_path

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


def tune_and_save(generator, targets: Sequence[TuneTarget], settings: PtiOptions, outdir, *,
                  network: str = "", export_pkl: bool = False, resume: bool | None = None,
                  lpips_model=None, device=None, should_stop: Callable[[int], bool] | None = None,
                  on_step: Callable[[dict], None] | None = None, on_resume: Callable[[int], None] | None = None,
                  extra_config: dict | None = None, report_extra: dict | None = None) -> dict:
    """Tune one generator on `targets` and write everything about it into `outdir`.

    Writes tuned_generator.safetensors (+ .pkl with export_pkl), NAME_before.png / NAME_after.png,
    loss_curve.png and tune.json (config, per-image metrics before and after). An interrupted run
    leaves checkpoint.pt, which the next call resumes (unless resume=False); it is removed once
    the outputs are written.
    """
    from ...models import save_generator
    from ...utils.io import save_image, write_json
    from ... import __version__

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    tuner = PivotalTuner(generator, targets, settings, lpips_model=lpips_model, device=device)
    checkpoint = outdir / CHECKPOINT_NAME
    before_renders, before = evaluate(tuner.original, tuner.targets, tuner.lpips, tuner.device, settings.noise_mode)
    result = tuner.run(checkpoint, resume=resume, should_stop=should_stop, on_step=on_step, on_resume=on_resume)
    config = {**settings.record(), **(extra_config or {}), "network": network, "sgtool_version": __version__}
    if result.interrupted:
        return {"status": "interrupted", "steps_done": result.steps_done, "checkpoint": str(checkpoint),
                "outdir": str(outdir), "settings": config}
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
        from ...models.nvidia_pickle import save_nvidia_pickle

        outputs["pkl"] = str(save_nvidia_pickle(result.generator, outdir / "tuned_generator.pkl"))
    outputs["loss_curve"] = str(plot_loss_curve(result.history, outdir / "loss_curve.png"))
    summary = {
        "status": "done", "outdir": str(outdir), "steps_done": result.steps_done,
        "stopped_early": result.stopped_early, "resumed_from_step": result.resumed_from,
        "seconds": round(result.seconds, 3), "outputs": outputs, "images": images,
        "mean_before": _mean_metrics(before), "mean_after": _mean_metrics(after),
        "history": result.history, "settings": config,
        # What `auto` resolved to on this machine: needed to reproduce the run elsewhere.
        "precision_used": tuner.precision, "recomputed_layers": tuner.recomputed_layers, **(report_extra or {}),
    }
    write_json(summary, outdir / "tune.json")
    checkpoint.unlink(missing_ok=True)
    summary["generator"] = result.generator
    return summary


def _mean_metrics(metrics: list[dict]) -> dict:
    return {key: float(np.mean([m[key] for m in metrics])) for key in metrics[0]} if metrics else {}
