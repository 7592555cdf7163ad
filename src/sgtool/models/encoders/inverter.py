"""ReStyle iterative inversion over a StyleGAN3 decoder (stylegan3-editing's ReStyle-pSp / ReStyle-e4e).

Step 1 feeds cat(x, avg_image) and adds `latent_avg` to the encoder's output; step k > 1 feeds
cat(x, previous reconstruction) and adds the previous codes. Reconstructions are rendered with
the identity input transform (aligned), pooled to 256 and fed back; with a landmarks transform
the same codes are also rendered unaligned.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import CheckpointError
from ..factory import generator_from_state_dict
from .loading import EncoderCheckpoint, encoder_kwargs, load_module_state, register_encoder_family
from .restyle import RESTYLE_ENCODERS

POOL_SIZE = 256


def face_pool(images: torch.Tensor, size: int = POOL_SIZE) -> torch.Tensor:
    if images.shape[-2:] == (size, size):  # an identity pool still costs a copy forward and backward
        return images
    return F.adaptive_avg_pool2d(images, (size, size))


def encoder_size(encoder: nn.Module) -> int:
    """The side the encoder reads (256 for every released one; smaller for tiny sgtool-trained ones)."""
    return int(getattr(encoder, "input_size", POOL_SIZE))


def fit_input(x: torch.Tensor, size: int) -> torch.Tensor:
    """A 256 px encoder input resampled to an encoder that reads `size` px (unchanged when equal)."""
    if x.shape[-1] == size:
        return x
    if x.shape[-1] > size:
        return F.adaptive_avg_pool2d(x, (size, size))
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


@dataclass
class InversionStep:
    """One refinement step: W+ codes [B, num_ws, w_dim] and their renders pooled to 256."""

    latents: torch.Tensor
    images: torch.Tensor
    unaligned: torch.Tensor | None = None
    images_full: torch.Tensor | None = None  # decoder resolution, only with keep_full=True
    unaligned_full: torch.Tensor | None = None
    # Feature-space encoders (SFE): "features" (the 64 px activation the codes render with, [B, C, H, W]) and what
    # an edit needs beside it ("fused", the editor's input; "e4e_latent", the codes edits are measured with).
    features: dict[str, torch.Tensor] | None = None


# ReStyle iterations of the reference inference scripts, whose test options override the checkpoint's
# n_iters_per_batch: stylegan3-editing 3, restyle-encoder (StyleGAN2) 5, HyperStyle 5.
INFERENCE_STEPS = {"restyle-stylegan3": 3, "restyle-stylegan2": 5, "hyperstyle": 5}


class ReStyleInverter(nn.Module):
    input_size = 256

    def __init__(self, encoder: nn.Module, generator: nn.Module, latent_avg: torch.Tensor, family: str,
                 encoder_type: str, default_steps: int = 5, source: str = ""):
        super().__init__()
        self.encoder = encoder
        self.generator = generator
        self.register_buffer("latent_avg", latent_avg.detach().to(torch.float32).clone().reshape(-1))
        self.family = family
        self.encoder_type = encoder_type
        self.default_steps = int(default_steps)
        self.source = source
        self._avg_image = None

    @property
    def num_ws(self) -> int:
        return self.encoder.style_count

    def _render(self, codes, transform=None):
        eye = torch.eye(3, device=codes.device).expand(codes.shape[0], 3, 3)
        return self.generator.synthesis(codes, noise_mode="const", force_fp32=True,
                                        transform=eye if transform is None else transform.to(torch.float32))

    @torch.no_grad()
    def average_image(self) -> torch.Tensor:
        """The decoder's render of latent_avg (aligned, pooled): the first step's 'previous reconstruction'."""
        if self._avg_image is None or self._avg_image.device != self.latent_avg.device:
            codes = self.latent_avg.reshape(1, 1, -1).repeat(1, self.num_ws, 1)
            self._avg_image = face_pool(self._render(codes), encoder_size(self.encoder))[0]
        return self._avg_image

    @torch.no_grad()
    def invert(self, x: torch.Tensor, steps: int | None = None, transform: torch.Tensor | None = None,
               keep_full: bool = False) -> list[InversionStep]:
        """x: [B, 3, 256, 256] in [-1, 1] (aligned, normalised); transform: optional [B, 3, 3]."""
        steps = self.default_steps if steps is None else int(steps)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (self.input_size, self.input_size):
            raise ValueError(f"x must be [B, 3, {self.input_size}, {self.input_size}], got {tuple(x.shape)}")
        device = self.latent_avg.device
        x = x.to(device, torch.float32)
        if transform is not None:
            transform = transform.to(device, torch.float32)
            if transform.shape != (x.shape[0], 3, 3):
                raise ValueError(f"transform must be [B, 3, 3] for B={x.shape[0]}, got {tuple(transform.shape)}")
        feed = encoder_size(self.encoder)
        x_feed = fit_input(x, feed)
        previous = self.average_image().unsqueeze(0).expand(x.shape[0], -1, -1, -1)
        codes = self.latent_avg.reshape(1, 1, -1).expand(x.shape[0], self.num_ws, -1)
        results = []
        for _ in range(steps):
            codes = self.encoder(torch.cat([x_feed, previous], dim=1)) + codes
            full = self._render(codes)
            images = face_pool(full)
            previous = images if feed == POOL_SIZE else face_pool(full, feed)
            step = InversionStep(latents=codes, images=images, images_full=full if keep_full else None)
            if transform is not None:
                unaligned = self._render(codes, transform)
                step.unaligned = face_pool(unaligned)
                step.unaligned_full = unaligned if keep_full else None
            results.append(step)
        return results


def _restyle_sg3_matches(ckpt: EncoderCheckpoint) -> bool:
    if ckpt.encoder_type not in RESTYLE_ENCODERS:
        return False
    decoder_keys = [k for k in ckpt.state_dict if k.startswith("decoder.")]
    # Without decoder weights the encoder needs --network; its styles count tells SG3 (16) from SG2 (18).
    if decoder_keys:
        return any(k.startswith("decoder.synthesis.input.") for k in decoder_keys)
    return _style_count(ckpt) == 16


_restyle_sg3_matches.encoder_types = tuple(RESTYLE_ENCODERS)


def _style_count(ckpt: EncoderCheckpoint) -> int:
    indices = {int(k.split(".")[2]) for k in ckpt.state_dict if k.startswith("encoder.styles.")}
    return max(indices) + 1 if indices else 0


def build_restyle_sg3(ckpt: EncoderCheckpoint, device="cpu", network=None) -> ReStyleInverter:
    from .. import load_generator

    family, encoder_cls = RESTYLE_ENCODERS[ckpt.encoder_type]
    state = ckpt.part("encoder")
    first_conv = state.get("input_layer.0.weight", state.get("conv1.weight"))
    if first_conv is None:
        raise CheckpointError(f"{ckpt.path}: encoder weights lack the input convolution; the file is incomplete")
    input_nc = int(first_conv.shape[1])
    if input_nc != 6:
        raise CheckpointError(f"{ckpt.path}: a ReStyle encoder takes 6 input channels (image + reconstruction), "
                              f"this one takes {input_nc}")
    encoder = encoder_cls(n_styles=_style_count(ckpt), input_nc=input_nc, **encoder_kwargs(ckpt))
    load_module_state(encoder, state, f"{ckpt.path} (encoder)")

    if network is not None:
        generator = network if isinstance(network, nn.Module) else load_generator(network)
    else:
        decoder_state = ckpt.part("decoder", drop=("synthesis.input.transform",))
        if not decoder_state:
            raise CheckpointError(f"{ckpt.path} holds no decoder weights; pass the generator with --network")
        generator = generator_from_state_dict(decoder_state, source=f"{ckpt.path} (decoder)")
        generator.source = f"{ckpt.path} (decoder)"
    if (generator.kind != "stylegan3" or generator.num_ws != encoder.style_count
            or generator.w_dim != encoder.style_dim):
        raise CheckpointError(f"the generator ({getattr(generator, 'source', 'network')}: {generator.kind}, "
                              f"{generator.num_ws} x {generator.w_dim} styles) does not fit the encoder in "
                              f"{ckpt.path} (stylegan3, {encoder.style_count} x {encoder.style_dim} styles)")
    latent_avg = ckpt.latent_avg if ckpt.latent_avg is not None else generator.mapping.w_avg
    if latent_avg.numel() != generator.w_dim:
        raise CheckpointError(f"{ckpt.path}: latent_avg has {latent_avg.numel()} values, expected {generator.w_dim}")
    # Iterations as stylegan3-editing's inference runs them (its test options override the checkpoint's).
    inverter = ReStyleInverter(encoder, generator.eval().requires_grad_(False), latent_avg, family,
                               ckpt.encoder_type, default_steps=INFERENCE_STEPS["restyle-stylegan3"],
                               source=str(ckpt.path))
    return inverter.eval().requires_grad_(False).to(device)


register_encoder_family("restyle-stylegan3", _restyle_sg3_matches, build_restyle_sg3)
