"""`--arch sfe`: StyleFeatureEditor's two training phases over any StyleGAN2 / StyleGAN3.

Phase 1 (the inverter: trunk, W+ heads, content head, fuser) learns to reconstruct the image rendered with its
code and its fused feature F, with F kept near the generator's own activation of that code so that the layers
after it still read it as theirs. Phase 2 (the feature editor, the inverter frozen) learns edits from images
whose true edit is known: a picture the generator renders from a code w (the known latent of a synthetic image,
or the W encoder's code of a real one) edited along a direction d must become G(w + a d). Its inputs are the
inverter's F and the change of the W encoder's feature under the same edit, as SFE's editor sees them at
inference; it also keeps reconstructing the real image when the change is zero. Directions are the generator's
SeFa factors (SFE trains on its semantic ones; a generic generator has none), strengths are drawn per image in
units of W's spread along each direction.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from ...editing.sefa import sefa_directions
from ...errors import CheckpointError, SgtoolError
from ...models.encoders import face_pool
from ...models.encoders.inverter import encoder_size, fit_input
from ...models.encoders.sfe import FeatureStyleEditor, SfeConfig, feature_delta
from ...models.encoders.sfe_layers import choose_feature_layer, render_with_feature
from ...settings import TrainEncoderSettings
from ..shared.render import synthesize
from .tasks import Batch, IterationResult

SPREAD_SAMPLES = 2048  # mapped latents that measure W's spread along each direction


def build_sfe(settings: TrainEncoderSettings, generator) -> FeatureStyleEditor:
    try:
        layer = choose_feature_layer(generator, settings.feature_layer)
    except CheckpointError as exc:  # a layer the generator lacks
        raise SgtoolError(f"--feature-layer: {exc}") from None
    return FeatureStyleEditor(SfeConfig(num_styles=generator.num_ws, w_dim=generator.w_dim, width=settings.width,
                                        feature_channels=layer.channels, layer=layer.name, feature_size=layer.size,
                                        feature_margin=layer.margin, input_size=settings.input_size))


def edit_directions(generator, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(unit directions [count, w_dim], W's standard deviation along each [count])."""
    directions = torch.from_numpy(sefa_directions(generator, top=count)[0])
    device = generator.mapping.w_avg.device
    z = torch.randn(SPREAD_SAMPLES, generator.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    with torch.no_grad():
        w = generator.mapping(z, None)[:, 0].to("cpu", torch.float32)
    return directions, (w @ directions.T).std(dim=0)


class SfeTask:
    """The inverter's phase for the first `steps - editor_steps` steps, then the editor's."""

    progressive = False

    def __init__(self, settings: TrainEncoderSettings, generator, encoder: FeatureStyleEditor,
                 latent_avg: torch.Tensor, losses, w_encoder, rank: int = 0):
        self.settings, self.generator, self.encoder, self.losses = settings, generator, encoder, losses
        self.latent_avg = latent_avg  # [num_ws, w_dim]
        self.w_encoder = w_encoder
        self.iterations = 1
        self.size = settings.input_size
        self.layer = encoder.layer(generator)
        self.editor_start = settings.steps - editor_phase_steps(settings)
        directions, spread = edit_directions(generator, settings.edit_directions, settings.seed)
        device = latent_avg.device
        self.directions, self.spread = directions.to(device), spread.to(device)
        self.editing = False
        self.rank, self.step, self.draws = rank, 0, 0
        self.inverter_norms = [m for part in (encoder.backbone, encoder.fuser) for m in part.modules()
                               if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.norms_reset = False

    def set_step(self, step: int) -> None:
        self.step, self.draws = step, 0
        self.editing = step >= self.editor_start
        inverter = (self.encoder.backbone, self.encoder.fuser)
        for part in inverter:
            part.requires_grad_(not self.editing)
        self.encoder.editor.requires_grad_(self.editing)
        for norm in self.inverter_norms:
            # Phase 2: the inverter's weights are frozen, so its batch norms can average their exact statistics
            # over every phase-2 batch (momentum None); phase 1's running averages lag weights that kept moving,
            # and at batch sizes of a few images the lag alone can wreck an eval-mode inversion.
            norm.momentum = None if self.editing else 0.1  # torch's default, which the inverter is built with

    def validation_step(self, done: int) -> None:
        """After `done` steps: validate what the last of them trained."""
        self.set_step(max(done - 1, 0))

    # ---- pieces
    def _render(self, ws: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        return face_pool(render_with_feature(self.generator, ws, feature, self.layer), self.size)

    def w_codes(self, x: torch.Tensor) -> torch.Tensor:
        """The W encoder's codes (the latent_avg of the generator added, as SFE does)."""
        with torch.no_grad():
            return self.w_encoder(fit_input(x, encoder_size(self.w_encoder))) + self.latent_avg

    def draw_edits(self, count: int) -> torch.Tensor:
        """Per image a direction and a strength, drawn from the seed, step, rank and micro-batch (so a resumed run
        draws the same): the W offsets [count, 1, w_dim]."""
        self.draws += 1
        rng = torch.Generator().manual_seed(hash((self.settings.seed, self.step, self.rank, self.draws)) % 2 ** 63)
        index = torch.randint(len(self.directions), (count,), generator=rng)
        strength = (torch.rand(count, generator=rng) * 2 - 1) * self.settings.edit_strength
        offsets = self.directions[index] * (strength.to(self.spread) * self.spread[index])[:, None]
        return offsets[:, None]

    # ---- one batch
    def run(self, model, batch: Batch, train: bool, sync=None) -> list[IterationResult]:
        """Phase 1: the reconstruction through the fused F. Phase 2: the editor's reconstruction (no change) and a
        known edit, in one editor pass."""
        sync = sync or (lambda final: nullcontext())
        with sync(True), torch.set_grad_enabled(train):
            if not self.editing:
                w, _, fused, own = model(batch.x, self.generator, self.latent_avg)
                y_hat = self._render(w, fused)
                loss, logs = self.losses(y_hat, batch.x, w, batch, task=self)
                if self.settings.feature_weight > 0:
                    keep = (fused - own).pow(2).mean()
                    logs["loss_feature"] = float(keep.detach())
                    loss = loss + self.settings.feature_weight * keep
            else:
                if train and not self.norms_reset and self.step == self.editor_start:
                    for norm in self.inverter_norms:
                        norm.reset_running_stats()
                    self.norms_reset = True
                self.encoder.backbone.train(train)  # training: batch statistics, accumulated for inference
                self.encoder.fuser.train(train)
                with torch.no_grad():
                    inversion = self.encoder.invert(batch.x, self.generator, self.latent_avg)
                    edit = self._known_edit(batch, inversion)
                w = inversion.w
                n = w.shape[0]
                features = model(fused=torch.cat([inversion.fused, edit["fused"]]),
                                 delta=torch.cat([torch.zeros_like(inversion.fused), edit["delta"]]))
                y_hat = self._render(w, features[:n])
                loss, logs = self.losses(y_hat, batch.x, w, batch, task=self)
                edited = self._render(edit["codes"], features[n:])
                edit_loss, edit_logs = self.losses(edited, edit["target"], edit["codes"], Batch(x=edit["target"]),
                                                   task=self)
                loss = loss + edit_loss
                logs.update({"edit_" + k.removeprefix("loss_"): v for k, v in edit_logs.items()})
            logs["loss"] = float(loss.detach())
            if train:
                loss.backward()
        return [IterationResult(logs, y_hat.detach(), w.detach())]

    def _known_edit(self, batch: Batch, inversion) -> dict[str, torch.Tensor]:
        """A generated picture (a synthetic image, or the render of a real one's W code), an edit of it drawn for
        this step, what the editor is given (the inverter's F, the W encoder's feature change) and the truth.
        `inversion`: the batch's own, which a synthetic picture (the batch itself) reuses."""
        codes = self.w_codes(batch.x)
        source = batch.latents if batch.latents is not None else codes
        if batch.latents is None:  # a real photo: edit the generator's render of its W code instead
            picture = face_pool(synthesize(self.generator, source).clamp(-1, 1), self.size)
            inversion = self.encoder.invert(picture, self.generator, self.latent_avg)
            codes = self.w_codes(picture)
        offsets = self.draw_edits(source.shape[0])
        return {"fused": inversion.fused, "codes": inversion.w + offsets,
                "delta": feature_delta(self.generator, self.layer, codes, codes + offsets),
                # clamped as every target image is (render_targets)
                "target": face_pool(synthesize(self.generator, source + offsets).clamp(-1, 1), self.size)}


def editor_phase_steps(settings: TrainEncoderSettings) -> int:
    """Steps of phase 2 (the last ones of the run)."""
    if settings.editor_steps is not None:
        return min(settings.editor_steps, settings.steps)
    return settings.steps // 3
