"""What each encoder architecture trains: its modules, one batch's refinement iterations, its losses,
and the reference layout its checkpoints are written in.

ReStyle (pSp / e4e heads) refines W+ codes over `iterations` passes, HyperStyle refines generator
weight offsets on top of a frozen W encoder's code, pSp / e4e predict the code in one pass. As in
the references, every iteration is its own loss and backward pass, fed the previous iteration's
output detached, and the gradients of all iterations add up to one optimizer step.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from ...errors import SgtoolError
from ...models.encoders import RESTYLE_ENCODERS, face_pool
from ...models.encoders.inverter import encoder_size, fit_input
from ...models.encoders.hyperstyle import build_hypernet, generator_layers, synthesize_with_deltas
from ...models.encoders.sg2_encoders import Encoder4Editing, GradualStyleEncoder
from ...settings import TrainEncoderSettings
from ..shared.render import synthesize
from .image_tasks import run_task

ENCODER_TYPES = {  # (arch, backbone) -> the reference's encoder_type
    ("restyle-psp", "ir-se50"): "BackboneEncoder", ("restyle-psp", "resnet34"): "ResNetBackboneEncoder",
    ("restyle-e4e", "ir-se50"): "ProgressiveBackboneEncoder",
    ("restyle-e4e", "resnet34"): "ResNetProgressiveBackboneEncoder",
    ("psp", "ir-se50"): "GradualStyleEncoder", ("e4e", "ir-se50"): "Encoder4Editing",
    ("hyperstyle", "resnet34"): "SharedWeightsHyperNetResNet",
}


@dataclass
class IterationResult:
    losses: dict[str, float]
    images: torch.Tensor  # [B, 3, input_size, input_size], detached
    codes: torch.Tensor  # [B, num_ws, w_dim], detached


@dataclass
class Batch:
    x: torch.Tensor  # the target [B, 3, S, S] in [-1, 1] (and the encoder input when there is no source)
    source: torch.Tensor | None = None  # an image-to-image task's encoder input (a sketch, labels, a degraded x...)
    latents: torch.Tensor | None = None  # known W+ of synthetic images
    id_target: torch.Tensor | None = None  # the identity net's embedding of x, computed once per batch


def default_iterations(settings: TrainEncoderSettings, generator) -> int:
    if settings.arch in ("psp", "e4e"):
        return 1
    if settings.encoder_steps is not None:
        return settings.encoder_steps
    return 3 if generator.kind == "stylegan3" else 5


def check_generator(settings: TrainEncoderSettings, generator, source: str) -> None:
    kind = getattr(generator, "kind", None)
    if kind not in ("stylegan2", "stylegan3"):
        raise SgtoolError(f"{source} is not a StyleGAN2/3 generator; pass one with --network")
    if getattr(generator, "c_dim", 0):
        raise SgtoolError(f"{source} is class-conditional; encoders are trained for unconditional generators")
    if settings.arch == "hyperstyle":
        if kind != "stylegan2":
            raise SgtoolError(f"{source} is a {kind} generator; HyperStyle tunes StyleGAN2's convolutions: pass a "
                              "StyleGAN2 network or choose --arch restyle-psp/restyle-e4e")
        generator_layers(generator)  # a 'skip' generator with a to-RGB per block


def tuned_layers(settings: TrainEncoderSettings, generator) -> list[int]:
    count = len(generator_layers(generator))
    try:
        requested = [int(v) for v in settings.layers_to_tune.split(",") if v.strip()]
    except ValueError:
        raise SgtoolError(f"--layers-to-tune {settings.layers_to_tune!r} must be comma-separated layer indices") \
            from None
    layers = sorted({i for i in requested if 0 <= i < count})
    if not layers:
        raise SgtoolError(f"--layers-to-tune {settings.layers_to_tune!r} names none of the generator's {count} layers")
    return layers


def build_encoder(settings: TrainEncoderSettings, generator, tuned: list[int] | None = None) -> nn.Module:
    """The trainable module of the architecture, randomly initialised (backbone weights come later)."""
    common = dict(width=settings.width, input_size=settings.input_size)
    if settings.arch == "hyperstyle":
        return build_hypernet(generator, tuned, input_nc=6, source="--layers-to-tune", **common)
    encoder_type = ENCODER_TYPES[(settings.arch, settings.encoder_backbone)]
    common["style_dim"] = generator.w_dim
    if settings.arch.startswith("restyle"):
        cls = RESTYLE_ENCODERS[encoder_type][1]
        return cls(n_styles=generator.num_ws, input_nc=6, **common)
    if settings.arch == "e4e":
        return Encoder4Editing(generator.num_ws, input_nc=3, **common)
    return GradualStyleEncoder(generator.num_ws, input_nc=run_task(settings).input_nc, **common)


def render(generator, codes: torch.Tensor, deltas: dict | None = None) -> torch.Tensor:
    if deltas is not None:
        return synthesize_with_deltas(generator, codes, deltas)
    return synthesize(generator, codes)


class EncoderTask:
    """One architecture's forward passes and losses over a frozen generator."""

    def __init__(self, settings: TrainEncoderSettings, generator, encoder: nn.Module, latent_avg: torch.Tensor,
                 losses, w_encoder: nn.Module | None = None):
        self.settings = settings
        self.generator = generator
        self.encoder = encoder  # the bare module (the model passed to run() may be its DDP wrapper)
        self.latent_avg = latent_avg  # [num_ws, w_dim]
        self.losses = losses
        self.w_encoder = w_encoder
        self.iterations = default_iterations(settings, generator)
        self.size = settings.input_size
        self.progressive = settings.arch in ("restyle-e4e", "e4e") and settings.progressive_start is not None
        self._avg_image = None

    # ---- e4e's progressive schedule
    def active_styles(self, step: int) -> int | None:
        """How many styles have their own offset at `step` (None: all)."""
        if not self.progressive:
            return None
        start, every = self.settings.progressive_start, self.settings.progressive_step_every
        if step < start:
            return 1
        return min(self.generator.num_ws, 2 + (step - start) // every)

    def set_step(self, step: int) -> None:
        if hasattr(self.encoder, "active_styles"):
            self.encoder.active_styles = self.active_styles(step)

    def validation_step(self, done: int) -> None:
        self.set_step(done)

    def discriminated_styles(self) -> list[int]:
        active = getattr(self.encoder, "active_styles", None)
        return list(range(self.generator.num_ws if active is None else active))

    def average_image(self) -> torch.Tensor:
        if self._avg_image is None:
            with torch.no_grad():
                self._avg_image = face_pool(render(self.generator, self.latent_avg[None]), self.size)
        return self._avg_image

    # ---- one batch
    def run(self, model: nn.Module, batch: Batch, train: bool, sync=None) -> list[IterationResult]:
        """Every iteration of one batch; with `train`, each iteration's loss is back-propagated (the last
        one inside `sync(True)`, the others inside `sync(False)`, so DDP reduces once)."""
        sync = sync or (lambda final: nullcontext())
        x = batch.x
        results = []
        if self.settings.arch == "hyperstyle":
            with torch.no_grad():
                codes = self.w_encoder(fit_input(x, encoder_size(self.w_encoder))) + self.latent_avg
                previous = face_pool(render(self.generator, codes), self.size)
            deltas = None
            for it in range(self.iterations):
                with sync(it == self.iterations - 1), torch.set_grad_enabled(train):
                    predicted = model(torch.cat([x, previous], dim=1))
                    if deltas is not None:
                        predicted = {i: d + deltas[i].detach() for i, d in predicted.items()}
                    y_hat = face_pool(render(self.generator, codes, predicted), self.size)
                    loss, logs = self.losses(y_hat, x, codes, batch, task=self)
                    if train:
                        loss.backward()
                deltas = {i: d.detach() for i, d in predicted.items()}
                previous = y_hat.detach()
                results.append(IterationResult(logs, previous, codes))
            return results
        if self.settings.arch in ("psp", "e4e"):
            with sync(True), torch.set_grad_enabled(train):
                codes = model(x if batch.source is None else batch.source) + self.latent_avg
                y_hat = face_pool(render(self.generator, codes), self.size)
                loss, logs = self.losses(y_hat, x, codes, batch, task=self)
                if train:
                    loss.backward()
            return [IterationResult(logs, y_hat.detach(), codes.detach())]
        previous = self.average_image().expand(x.shape[0], -1, -1, -1)
        codes = self.latent_avg.expand(x.shape[0], -1, -1)
        for it in range(self.iterations):
            with sync(it == self.iterations - 1), torch.set_grad_enabled(train):
                new_codes = model(torch.cat([x, previous], dim=1)) + codes
                y_hat = face_pool(render(self.generator, new_codes), self.size)
                loss, logs = self.losses(y_hat, x, new_codes, batch, task=self)
                if train:
                    loss.backward()
            codes, previous = new_codes.detach(), y_hat.detach()
            results.append(IterationResult(logs, previous, codes))
        return results


def progressive_deltas(codes: torch.Tensor, active: int | None, norm: int) -> torch.Tensor:
    """e4e's delta regulariser: sum over the active styles i > 0 of mean ||w_i - w_0||."""
    count = codes.shape[1] if active is None else active
    if count < 2:
        return codes.new_zeros(())
    deltas = codes[:, 1:count] - codes[:, :1]
    return torch.linalg.vector_norm(deltas, ord=norm, dim=2).mean(dim=0).sum()

