"""Training losses: pixel MSE, LPIPS, identity (ArcFace or MoCo), W-norm, known-latent MSE, e4e's delta
regulariser and latent discriminator (with R1), each weighted by its setting."""

from __future__ import annotations

import random

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import CheckpointError, SgtoolError
from ...metrics import IdentityModel
from ...models.encoders.discriminator import LatentCodesDiscriminator
from ...settings import TrainEncoderSettings
from .pretrained import read_state_dict
from .tasks import progressive_deltas

MOCO_PREFIX = "module.encoder_q."


class MocoFeatures(nn.Module):
    """MoCo v2 ResNet-50 features (fc removed), unit length: the identity loss for non-face domains."""

    def __init__(self):
        super().__init__()
        from torchvision.models import resnet50

        self.net = resnet50(weights=None)
        self.net.fc = nn.Identity()

    @classmethod
    def load(cls, path, device="cpu") -> "MocoFeatures":
        state = read_state_dict(path, "MoCo v2 ResNet-50")
        state = {k[len(MOCO_PREFIX):] if k.startswith(MOCO_PREFIX) else k: v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        model = cls()
        missing, unexpected = model.net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{path} is not a MoCo v2 ResNet-50 (moco_v2_800ep_pretrain.pth.tar): "
                                  f"{len(missing)} missing, {len(unexpected)} unexpected tensors")
        return model.eval().requires_grad_(False).to(device)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(F.interpolate(images, size=224, mode="bilinear", align_corners=False)), dim=1)


def identity_model(settings: TrainEncoderSettings, weights, device):
    if settings.id_loss == "none" or settings.id_weight == 0:
        return None
    if weights is None:
        raise SgtoolError("the identity loss needs its weights; pass --id-weights or --id-loss none")
    if settings.id_loss == "moco":
        return MocoFeatures.load(weights, device)
    return IdentityModel.load(weights, device).eval().requires_grad_(False)


class LatentPool:
    """e4e's pool of past latents: half of a query is swapped with stored ones (seeded per step)."""

    def __init__(self, size: int):
        self.size, self.items = size, []

    def query(self, latents: torch.Tensor, rng: random.Random) -> torch.Tensor:
        if self.size == 0:
            return latents
        out = []
        for w in latents.detach():
            if len(self.items) < self.size:
                self.items.append(w.clone())
                out.append(w)
            elif rng.random() > 0.5:
                slot = rng.randrange(self.size)
                out.append(self.items[slot].clone())
                self.items[slot] = w.clone()
            else:
                out.append(w)
        return torch.stack(out)

    def state(self) -> list[torch.Tensor]:
        return [w.cpu() for w in self.items]

    def load(self, items, device) -> None:
        self.items = [w.to(device) for w in items]


class Objectives:
    """The encoder's loss of one iteration: (total, {name: value})."""

    def __init__(self, settings: TrainEncoderSettings, latent_avg: torch.Tensor, lpips_model=None, id_model=None,
                 discriminator: nn.Module | None = None):
        self.settings = settings
        self.latent_avg = latent_avg
        self.lpips = lpips_model
        self.id_model = id_model
        self.discriminator = discriminator

    def __call__(self, y_hat, y, codes, batch, task=None):
        s = self.settings
        logs = {}
        total = y_hat.new_zeros(())
        l2 = F.mse_loss(y_hat, y)
        logs["loss_l2"] = float(l2.detach())
        total = total + s.l2_weight * l2
        if self.lpips is not None and s.lpips_weight > 0:
            lp = self.lpips(y_hat, y).mean()
            logs["loss_lpips"] = float(lp.detach())
            total = total + s.lpips_weight * lp
        if self.id_model is not None:
            if batch.id_target is None:
                with torch.no_grad():
                    batch.id_target = self.id_model.embed(y)
            similarity = (self.id_model.embed(y_hat) * batch.id_target).sum(dim=1).mean()
            logs["loss_id"] = float((1 - similarity).detach())
            total = total + s.id_weight * (1 - similarity)
        if s.w_norm_weight > 0:
            w_norm = torch.linalg.vector_norm(codes - self.latent_avg, dim=(1, 2)).mean()
            logs["loss_w_norm"] = float(w_norm.detach())
            total = total + s.w_norm_weight * w_norm
        if s.latent_weight > 0 and batch.latents is not None:
            latent = F.mse_loss(codes, batch.latents)
            logs["loss_latent"] = float(latent.detach())
            total = total + s.latent_weight * latent
        if task is not None and task.progressive and s.delta_norm_weight > 0:
            delta = progressive_deltas(codes, getattr(task.encoder, "active_styles", None), s.delta_norm)
            logs["loss_delta"] = float(delta.detach())
            total = total + s.delta_norm_weight * delta
        if self.discriminator is not None and task is not None:
            dims = task.discriminated_styles()
            adversarial = sum(F.softplus(-self.discriminator(codes[:, i])).mean() for i in dims) / len(dims)
            logs["loss_adversarial"] = float(adversarial.detach())
            total = total + s.w_discriminator_weight * adversarial
        logs["loss"] = float(total.detach())
        return total, logs


def make_discriminator(settings: TrainEncoderSettings, generator) -> LatentCodesDiscriminator | None:
    if settings.arch not in ("e4e", "restyle-e4e") or settings.w_discriminator_weight == 0:
        return None
    return LatentCodesDiscriminator(generator.w_dim, 4)
