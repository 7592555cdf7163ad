"""StyleFeatureEditor (SFE, CVPR 2024): feature-space inversion and editing for a 1024 px StyleGAN2.

Beside the W+ code, the inverter predicts the generator's activation F at one layer (the 64 px output of
its second 64 px convolution, index 9 of rosinality's feature list); the generator then runs from w up to
that layer, takes F in place of its own activation, and continues from there with w. An edit moves w
and, through the feature editor, F: the editor sees the inverted F and the change an e4e code's layer-9
feature undergoes under the same edit (unedited minus edited).

Layout of the released `sfe_editor_light.pt`: `inverter.fs_backbone.*` (an ArcFace iResNet-50 trunk whose
third stage keeps 64 px, a W+ head on its pooled stages and a content head), `inverter.fuser.*` and
`encoder.*` (the feature editor); both the fuser and the editor are a 1x1 convolution from 1024 to 512
channels followed by five residual blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import CheckpointError
from ..safe_pickle import safe_torch_load

FEATURE_RESOLUTION = 64  # SFE's F: the generator's 64 px activation (rosinality feature index 9)
FEATURE_CHANNELS = 512
NUM_STYLES = 18
STAGES = ((64, 3), (128, 4), (256, 14), (512, 3))  # iResNet-50: channels and blocks per stage


class IBasicBlock(nn.Module):
    """ArcFace's residual block: BN, 3x3 conv, BN, PReLU, 3x3 conv (strided), BN; no activation after the sum."""

    def __init__(self, inplanes: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


def _stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    return nn.Sequential(IBasicBlock(inplanes, planes, stride), *(IBasicBlock(planes, planes, 1)
                                                                  for _ in range(blocks - 1)))


class FeatureStyleBackbone(nn.Module):
    """256 px image -> (W+ offsets [B, 18, 512], predicted F [B, 512, 64, 64])."""

    def __init__(self, num_styles: int = NUM_STYLES):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        inplanes = 64
        for index, (planes, blocks) in enumerate(STAGES, start=1):
            # The third stage keeps its input's 64 px (stride 1 where ArcFace has 2): F's resolution.
            setattr(self, f"block_{index}", _stage(inplanes, planes, blocks, 1 if index == 3 else 2))
            inplanes = planes
        self.content_layer = nn.Sequential(
            nn.BatchNorm2d(256), nn.Conv2d(256, 512, 3, 1, 1, bias=False), nn.BatchNorm2d(512), nn.PReLU(512),
            nn.Conv2d(512, 512, 3, 1, 1, bias=False), nn.BatchNorm2d(512))
        pooled = sum(planes for planes, _ in STAGES) * 9
        self.styles = nn.ModuleList(nn.Linear(pooled, 512) for _ in range(num_styles))

    def pooled(self, x):
        """(the four stages' outputs pooled to 3x3 and flattened channel-major [B, 8640], the third stage)."""
        x = self.conv(x)
        stages = []
        for index in range(1, 5):
            x = getattr(self, f"block_{index}")(x)
            stages.append(x)
        features = torch.cat([F.adaptive_avg_pool2d(s, (3, 3)) for s in stages], dim=1)
        return features.flatten(1), stages[2]

    def forward(self, x):
        pooled, third = self.pooled(x)
        codes = torch.stack([head(pooled) for head in self.styles], dim=1)
        return codes, self.content_layer(third)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(channels), nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels),
            nn.PReLU(channels), nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x):
        return x + self.body(x)


class FeatureMixer(nn.Module):
    """Two feature tensors concatenated (1024 channels) -> one (512): SFE's fuser and its feature editor."""

    def __init__(self, blocks: int = 5, in_channels: int = 2 * FEATURE_CHANNELS, channels: int = FEATURE_CHANNELS):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 1)
        self.body = nn.Sequential(*(_ResidualBlock(channels) for _ in range(blocks)))

    def forward(self, first, second):
        return self.body(self.conv(torch.cat([first, second], dim=1)))


@dataclass
class FeatureInversion:
    """What the inverter finds for a batch: the W+ code, the predicted and the fused F."""

    w: torch.Tensor  # [B, 18, 512], latent_avg added
    content: torch.Tensor  # [B, 512, 64, 64], the backbone's F
    fused: torch.Tensor  # [B, 512, 64, 64], F of the inversion (content fused with w's own layer-9 feature)


class FeatureStyleEditor(nn.Module):
    """SFE's inverter (backbone + fuser) and feature editor, over a generator it does not own."""

    def __init__(self):
        super().__init__()
        self.backbone = FeatureStyleBackbone()
        self.fuser = FeatureMixer()
        self.editor = FeatureMixer()

    def invert(self, x256: torch.Tensor, generator, latent_avg: torch.Tensor) -> FeatureInversion:
        codes, content = self.backbone(x256)
        w = codes + latent_avg.reshape(1, 1, -1).to(codes)
        return FeatureInversion(w, content, self.fuser(content, generator_feature(generator, w)))

    def edit_feature(self, fused: torch.Tensor, delta: torch.Tensor | None = None) -> torch.Tensor:
        """F' from the inversion's F and the change of an e4e feature under the edit (None: the reconstruction)."""
        return self.editor(fused, torch.zeros_like(fused) if delta is None else delta)


def generator_feature(generator, ws: torch.Tensor) -> torch.Tensor:
    """The generator's activation at F's place (the 64 px block's output) for W+ codes, noise as stored."""
    return generator.synthesis(ws, noise_mode="const", stop_at=FEATURE_RESOLUTION)


def render_with_feature(generator, ws: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
    """The image of `ws` with F in place of the generator's own 64 px activation (lower to-RGB skips from w)."""
    return generator.synthesis(ws, noise_mode="const", replace={FEATURE_RESOLUTION: feature})


def feature_delta(generator, ws: torch.Tensor, edited_ws: torch.Tensor, mask64: torch.Tensor | None = None):
    """The editor's second input: the 64 px feature of `ws` minus that of `edited_ws` (SFE takes e4e codes),
    zero where `mask64` ([B, 1, 64, 64], 1 = background) is 1."""
    delta = generator_feature(generator, ws) - generator_feature(generator, edited_ws)
    return delta if mask64 is None else delta * (1 - mask64)


def load_feature_editor(path, device="cpu") -> FeatureStyleEditor:
    """SFE's `sfe_editor_light.pt` (`inverter.fs_backbone.*`, `inverter.fuser.*`, `encoder.*`; other entries,
    as full training checkpoints carry, are ignored), read without running code."""
    data = safe_torch_load(path)
    state = data.get("state_dict") if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a StyleFeatureEditor checkpoint (no state_dict)")
    parts = {"backbone.": "inverter.fs_backbone.", "fuser.": "inverter.fuser.", "editor.": "encoder."}
    model = FeatureStyleEditor()
    expected = model.state_dict()
    mapped = {}
    for ours, theirs in parts.items():
        mapped.update({ours + k[len(theirs):]: v for k, v in state.items()
                       if isinstance(k, str) and k.startswith(theirs) and ours + k[len(theirs):] in expected})
    missing = [k for k in expected if k not in mapped]
    if missing:
        theirs = next((t + k[len(o):] for o, t in parts.items() for k in missing if k.startswith(o)), missing[0])
        raise CheckpointError(f"{path} is not a StyleFeatureEditor editor checkpoint (no {theirs}; the inverter-only "
                              "phase-1 file and other encoders are not it)")
    wrong = next((k for k in expected if tuple(mapped[k].shape) != tuple(expected[k].shape)), None)
    if wrong is not None:
        raise CheckpointError(f"{path}: {wrong} is {list(mapped[wrong].shape)}, expected {list(expected[wrong].shape)}")
    model.load_state_dict({k: v.contiguous() for k, v in mapped.items()})
    return model.eval().requires_grad_(False).to(device)


def is_feature_editor_checkpoint(path) -> bool:
    """An SFE file (its inverter and feature editor), told by its keys before any other encoder reader tries it."""
    try:
        data = safe_torch_load(path)
    except Exception:  # not a weights-only torch file: another reader names the problem
        return False
    state = data.get("state_dict") if isinstance(data, dict) else None
    return isinstance(state, dict) and any(str(k).startswith("inverter.fs_backbone.") for k in state)


class FeatureStyleInverter(nn.Module):
    """SFE inversion as sgtool's inverters run: `.invert(x256)` -> one step whose latents are the W+ codes, whose
    features are F (the editor's reconstruction feature) and whose images render both."""

    input_size = 256
    default_steps = 1
    family = "sfe"
    encoder_type = "StyleFeatureEditor"

    def __init__(self, model: FeatureStyleEditor, generator, latent_avg: torch.Tensor, w_encoder: nn.Module,
                 source: str = ""):
        super().__init__()
        if generator.kind != "stylegan2" or generator.img_resolution != 1024 or generator.num_ws != NUM_STYLES:
            raise CheckpointError(f"{source}: StyleFeatureEditor works with a 1024 px StyleGAN2 of 18 style inputs "
                                  f"(SFE's), not {generator.kind} {generator.img_resolution} px")
        self.model, self.generator, self.w_encoder, self.source = model, generator, w_encoder, source
        self.register_buffer("latent_avg", latent_avg.reshape(-1).float())

    @torch.no_grad()
    def invert(self, x: torch.Tensor, steps: int | None = None, transform: torch.Tensor | None = None,
               keep_full: bool = False):
        from ...errors import SgtoolError
        from .inverter import InversionStep, face_pool

        if steps not in (None, 1):
            raise SgtoolError(f"{self.source} is a single-pass feature-space encoder: --encoder-steps must be 1 (or "
                              f"left out), got {steps}")
        if transform is not None:
            raise ValueError("StyleGAN2 generators have no input transform; invert aligned crops only")
        x = x.to(self.latent_avg.device, torch.float32)
        inversion = self.model.invert(x, self.generator, self.latent_avg)
        feature = self.model.edit_feature(inversion.fused)
        full = render_with_feature(self.generator, inversion.w, feature)
        e4e_codes = self.w_encoder.encoder(x) + self.latent_avg  # the generator's latent_avg, as SFE adds it
        return [InversionStep(latents=inversion.w, images=face_pool(full), images_full=full if keep_full else None,
                              features={"features": feature, "fused": inversion.fused, "e4e_latent": e4e_codes})]


def load_feature_inverter(path, device="cpu", network=None, w_encoder=None) -> FeatureStyleInverter:
    """SFE for inversion: its file, the StyleGAN2 generator it edits (`network`) and the e4e whose codes measure
    edits (`w_encoder`); both required, SFE files hold neither."""
    from ..loading import load_generator
    from .loading import build_inverter, read_encoder_checkpoint

    if network is None:
        raise CheckpointError(f"{path} is a StyleFeatureEditor file, which holds no generator: pass the StyleGAN2 "
                              "it was trained with as --network (stylegan2-ffhq-config-f.pt)")
    if w_encoder is None:
        raise CheckpointError(f"{path} is a StyleFeatureEditor file: pass the e4e it edits with as --w-encoder "
                              "(e4e_ffhq_encode.pt); edits measure their feature change with its codes")
    generator = network if isinstance(network, nn.Module) else load_generator(network)
    e4e = build_inverter(read_encoder_checkpoint(w_encoder), network=generator)
    if getattr(e4e, "encoder_type", None) != "Encoder4Editing":
        raise CheckpointError(f"--w-encoder {w_encoder} is a {getattr(e4e, 'encoder_type', '?')} checkpoint; "
                              "StyleFeatureEditor measures edits with an e4e (Encoder4Editing)")
    w_encoder = e4e
    # SFE adds the generator file's latent_avg (a rosinality file's, read into mapping.w_avg).
    return FeatureStyleInverter(load_feature_editor(path), generator.eval().requires_grad_(False),
                                generator.mapping.w_avg, w_encoder, source=str(path)).to(device)


FEATURES_FORMAT = "sgtool-sfe-features"


@dataclass
class SavedFeatures:
    """An SFE inversion's NAME_features.safetensors: the tensors an edit needs and what produced them."""

    features: torch.Tensor  # [C, 64, 64] the reconstruction's F
    fused: torch.Tensor  # [C, 64, 64] the editor's input
    e4e_latent: torch.Tensor  # [18, 512] the codes edits are measured with
    editor: str  # the SFE file that made them (its feature editor carries the edits)


def read_features(path, generator) -> SavedFeatures:
    """NAME_features.safetensors written by `sgtool invert` with an SFE encoder, checked against `generator`."""
    from safetensors import SafetensorError, safe_open

    from ...errors import SgtoolError

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in ("features", "fused", "e4e_latent") if key in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise SgtoolError(f"{path} is not a readable feature file ({exc})") from None
    if meta.get("format") != FEATURES_FORMAT or len(tensors) != 3:
        raise SgtoolError(f"{path} is not a feature file of `sgtool invert` with a StyleFeatureEditor encoder")
    channels = generator_channels(generator)
    if meta.get("layer") != f"b{FEATURE_RESOLUTION}" or tuple(tensors["features"].shape) != (channels, 64, 64) \
            or tuple(tensors["fused"].shape) != (channels, 64, 64) \
            or tuple(tensors["e4e_latent"].shape) != (generator.num_ws, generator.w_dim):
        raise SgtoolError(f"{path} holds features of another generator or layer ({meta.get('layer')}, "
                          f"{list(tensors['features'].shape)}); this one takes b{FEATURE_RESOLUTION} features of "
                          f"{channels} x 64 x 64: invert again with --network set to it")
    if not all(torch.isfinite(t).all() for t in tensors.values()):
        raise SgtoolError(f"{path} holds NaN or infinite values; invert the photo again")
    return SavedFeatures(tensors["features"], tensors["fused"], tensors["e4e_latent"], meta.get("encoder", ""))


def generator_channels(generator) -> int:
    """The channels of the generator's 64 px activation (SFE's F); -1 when it has no 64 px StyleGAN2 block."""
    block = getattr(generator.synthesis, f"b{FEATURE_RESOLUTION}", None)
    return int(block.conv1.out_channels) if block is not None and hasattr(block, "conv1") else -1


def edit_in_feature_space(editor: FeatureStyleEditor, generator, saved: SavedFeatures, ws: torch.Tensor,
                          edited_ws: torch.Tensor, edited_e4e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the edited image [1, 3, R, R], its F'): the editor's F' from the inversion's F and the change of the e4e
    code's feature under the same W edit (`edited_e4e`), rendered with the edited codes."""
    e4e = saved.e4e_latent[None].to(ws)
    delta = feature_delta(generator, e4e, edited_e4e.to(ws))
    feature = editor.edit_feature(saved.fused[None].to(ws), delta)
    return render_with_feature(generator, edited_ws, feature), feature
