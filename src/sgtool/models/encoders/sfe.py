"""StyleFeatureEditor (SFE, CVPR 2024): feature-space inversion and editing (released for a 1024 px StyleGAN2;
`sgtool train-encoder --arch sfe` builds the same parts for any StyleGAN2 or StyleGAN3, see `sfe_layers`).

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
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import CheckpointError
from ..safe_pickle import safe_torch_load
from .sfe_layers import FeatureLayer, choose_feature_layer, feature_layers, generator_feature, render_with_feature

FEATURE_RESOLUTION = 64  # SFE's F: the generator's 64 px activation (rosinality feature index 9)
FEATURE_CHANNELS = 512
NUM_STYLES = 18
STAGES = ((64, 3), (128, 4), (256, 14), (512, 3))  # iResNet-50: channels and blocks per stage


@dataclass(frozen=True)
class SfeConfig:
    """The shapes of an SFE model: the released file's by default; `sgtool train-encoder --arch sfe` records its
    own (any generator, narrower trunks) under the checkpoint's `sgtool.arch.sfe`."""

    num_styles: int = NUM_STYLES
    w_dim: int = 512
    width: float = 1.0  # multiplies the trunk's channels
    feature_channels: int = FEATURE_CHANNELS
    layer: str = f"b{FEATURE_RESOLUTION}"
    feature_size: int = FEATURE_RESOLUTION
    input_size: int = 256
    feature_margin: int = 0  # StyleGAN3: F's pixels beyond the image on each side

    def planes(self) -> list[int]:
        return [max(1, round(planes * self.width)) for planes, _ in STAGES]


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
    """Image (256 px for the released file) -> (W+ offsets [B, styles, w_dim], predicted F [B, C, size, size])."""

    def __init__(self, config: SfeConfig = SfeConfig()):
        super().__init__()
        self.feature_size, self.margin = config.feature_size, config.feature_margin
        planes = config.planes()
        self.conv = nn.Sequential(nn.Conv2d(3, planes[0], 3, 1, 1, bias=False), nn.BatchNorm2d(planes[0]),
                                  nn.PReLU(planes[0]))
        inplanes = planes[0]
        for index, (width, (_, blocks)) in enumerate(zip(planes, STAGES), start=1):
            # The third stage keeps its input's side (stride 1 where ArcFace has 2): a quarter of the input, F's.
            setattr(self, f"block_{index}", _stage(inplanes, width, blocks, 1 if index == 3 else 2))
            inplanes = width
        channels = config.feature_channels
        self.content_layer = nn.Sequential(
            nn.BatchNorm2d(planes[2]), nn.Conv2d(planes[2], channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels),
            nn.PReLU(channels), nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels))
        self.styles = nn.ModuleList(nn.Linear(sum(planes) * 9, config.w_dim) for _ in range(config.num_styles))

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
        content = self.content_layer(third)
        inside = self.feature_size - 2 * self.margin  # the pixels of F that span the picture
        if content.shape[-1] != inside:  # an input size other than 4x the layer's
            content = F.interpolate(content, size=(inside, inside), mode="bilinear", align_corners=False)
        if self.margin:  # StyleGAN3 renders beyond the picture: its edge continues into the margins
            content = F.pad(content, (self.margin,) * 4, mode="replicate")
        return codes, content


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

    def __init__(self, blocks: int = 5, in_channels: int = 2 * FEATURE_CHANNELS, channels: int = FEATURE_CHANNELS,
                 start: tuple[float | None, float | None] = (None, None)):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 1)
        self.body = nn.Sequential(*(_ResidualBlock(channels) for _ in range(blocks)))
        # Untrained, it computes start[0] * first + start[1] * second for the inputs given a number (the others
        # mixed in at random, so their networks get gradients from the first step), its residual blocks adding
        # nothing: training refines a feature that already works.
        with torch.no_grad():
            self.conv.bias.zero_()
            for index, scale in enumerate(start):
                if scale is not None:
                    self.conv.weight[:, index * channels:(index + 1) * channels] = \
                        scale * torch.eye(channels)[..., None, None]
            for block in self.body:
                block.body[-1].weight.zero_()

    def forward(self, first, second):
        return self.body(self.conv(torch.cat([first, second], dim=1)))


@dataclass
class FeatureInversion:
    """What the inverter finds for a batch: the W+ code, the predicted and the fused F."""

    w: torch.Tensor  # [B, 18, 512], latent_avg added
    content: torch.Tensor  # [B, 512, 64, 64], the backbone's F
    fused: torch.Tensor  # [B, 512, 64, 64], F of the inversion (content fused with w's own layer-9 feature)
    own: torch.Tensor  # [B, 512, 64, 64], the generator's activation of w at that layer


class FeatureStyleEditor(nn.Module):
    """SFE's inverter (backbone + fuser) and feature editor, over a generator it does not own."""

    def __init__(self, config: SfeConfig = SfeConfig()):
        super().__init__()
        self.config = config
        channels = config.feature_channels
        self.backbone = FeatureStyleBackbone(config)
        self.fuser = FeatureMixer(in_channels=2 * channels, channels=channels, start=(None, 1.0))  # own
        self.editor = FeatureMixer(in_channels=2 * channels, channels=channels, start=(1.0, -1.0))
        # The editor starts by moving F as the e4e code's feature moves (delta is unedited minus edited).

    def layer(self, generator) -> FeatureLayer:
        """The generator layer F replaces, checked against the generator's."""
        layer = choose_feature_layer(generator, self.config.layer)
        if (layer.channels, layer.size, layer.margin) != (self.config.feature_channels, self.config.feature_size,
                                                          self.config.feature_margin):
            raise CheckpointError(f"this SFE predicts {self.config.feature_channels} x {self.config.feature_size}px "
                                  f"features at {layer.name}; the generator's are {layer.channels} x {layer.size}px")
        return layer

    def invert(self, x: torch.Tensor, generator, latent_avg: torch.Tensor, **render) -> FeatureInversion:
        codes, content = self.backbone(x)
        w = codes + latent_avg.reshape(1, -1, codes.shape[-1]).to(codes)
        own = generator_feature(generator, w, self.layer(generator), **render)
        return FeatureInversion(w, content, self.fuser(content, own), own)

    def forward(self, x=None, generator=None, latent_avg=None, fused=None, delta=None):
        """Training's entry (DDP syncs what runs through forward): with `x`, the inversion as a tuple (w, content,
        fused, own); otherwise the editor's F' of `fused` and `delta`."""
        if x is not None:
            inversion = self.invert(x, generator, latent_avg)
            return inversion.w, inversion.content, inversion.fused, inversion.own
        return self.edit_feature(fused, delta)

    def edit_feature(self, fused: torch.Tensor, delta: torch.Tensor | None = None) -> torch.Tensor:
        """F' from the inversion's F and the change of an e4e feature under the edit (None: the reconstruction)."""
        return self.editor(fused, torch.zeros_like(fused) if delta is None else delta)


def feature_delta(generator, layer: FeatureLayer, ws: torch.Tensor, edited_ws: torch.Tensor,
                  mask: torch.Tensor | None = None, **render):
    """The editor's second input: the feature of `ws` minus that of `edited_ws` (SFE takes e4e codes), zero where
    `mask` ([B, 1, size, size], 1 = background) is 1."""
    delta = generator_feature(generator, ws, layer, **render) - generator_feature(generator, edited_ws, layer, **render)
    return delta if mask is None else delta * (1 - mask)


def sfe_config(data: dict) -> SfeConfig:
    """The shapes an SFE file was built with: sgtool's record, or the released file's."""
    arch = (data.get("sgtool") or {}).get("arch") if isinstance(data.get("sgtool"), dict) else None
    recorded = arch.get("sfe") if isinstance(arch, dict) else None
    if not isinstance(recorded, dict):
        return SfeConfig()
    fields = set(SfeConfig.__dataclass_fields__)
    try:
        return SfeConfig(**{k: type(getattr(SfeConfig, k))(v) for k, v in recorded.items() if k in fields})
    except (TypeError, ValueError):
        raise CheckpointError(f"its recorded SFE shapes are unreadable ({recorded})") from None


def sfe_state(model: FeatureStyleEditor) -> dict[str, torch.Tensor]:
    """The model's weights under SFE's names (what its own loader reads)."""
    return {theirs + k[len(ours):]: v for k, v in model.state_dict().items()
            for ours, theirs in SFE_PARTS.items() if k.startswith(ours)}


SFE_PARTS = {"backbone.": "inverter.fs_backbone.", "fuser.": "inverter.fuser.", "editor.": "encoder."}


def load_feature_editor(path, device="cpu") -> FeatureStyleEditor:
    """SFE's `sfe_editor_light.pt` (`inverter.fs_backbone.*`, `inverter.fuser.*`, `encoder.*`; other entries,
    as full training checkpoints carry, are ignored) or an `sgtool train-encoder --arch sfe` file, read without
    running code."""
    data = safe_torch_load(path)
    state = data.get("state_dict") if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a StyleFeatureEditor checkpoint (no state_dict)")
    try:
        model = FeatureStyleEditor(sfe_config(data))
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    expected = model.state_dict()
    mapped = {}
    for ours, theirs in SFE_PARTS.items():
        mapped.update({ours + k[len(theirs):]: v for k, v in state.items()
                       if isinstance(k, str) and k.startswith(theirs) and ours + k[len(theirs):] in expected})
    missing = [k for k in expected if k not in mapped]
    if missing:
        theirs = next((t + k[len(o):] for o, t in SFE_PARTS.items() for k in missing if k.startswith(o)), missing[0])
        raise CheckpointError(f"{path} is not a StyleFeatureEditor editor checkpoint (no {theirs}; the inverter-only "
                              "phase-1 file and other encoders are not it)")
    wrong = next((k for k in expected if tuple(mapped[k].shape) != tuple(expected[k].shape)), None)
    if wrong is not None:
        raise CheckpointError(f"{path}: {wrong} is {list(mapped[wrong].shape)}, expected {list(expected[wrong].shape)}")
    model.load_state_dict({k: v.contiguous() for k, v in mapped.items()})
    return model.eval().requires_grad_(False).to(device)


def is_feature_editor_checkpoint(path) -> bool:
    """An SFE file (its inverter and feature editor), told by its keys before any other encoder reader tries it
    (the tensors mapped, not read, where the file allows)."""
    try:
        try:
            data = safe_torch_load(path, mmap=True)
        except RuntimeError:  # a legacy (pre-zip) torch file cannot be mapped
            data = safe_torch_load(path)
    except Exception:  # not a weights-only torch file: another reader names the problem
        return False
    state = data.get("state_dict") if isinstance(data, dict) else None
    return isinstance(state, dict) and any(str(k).startswith("inverter.fs_backbone.") for k in state)


class FeatureStyleInverter(nn.Module):
    """SFE inversion as sgtool's inverters run: `.invert(x256)` -> one step whose latents are the W+ codes, whose
    features are F (the editor's reconstruction feature) and whose images render both."""

    default_steps = 1
    family = "sfe"
    encoder_type = "StyleFeatureEditor"

    def __init__(self, model: FeatureStyleEditor, generator, latent_avg: torch.Tensor, w_encoder: nn.Module,
                 source: str = ""):
        super().__init__()
        config = model.config
        if (generator.num_ws, generator.w_dim) != (config.num_styles, config.w_dim):
            raise CheckpointError(f"{source} predicts {config.num_styles} x {config.w_dim} codes; the generator takes "
                                  f"{generator.num_ws} x {generator.w_dim}: pass the network it was trained with")
        try:
            self.layer = model.layer(generator)
        except CheckpointError as exc:
            raise CheckpointError(f"{source}: {exc}; pass the network it was trained with") from None
        self.input_size = config.input_size
        self.model, self.generator, self.w_encoder, self.source = model, generator, w_encoder, source
        self.register_buffer("latent_avg", latent_avg.reshape(-1).float())

    @torch.no_grad()
    def invert(self, x: torch.Tensor, steps: int | None = None, transform: torch.Tensor | None = None,
               keep_full: bool = False):
        from ...errors import SgtoolError
        from .inverter import InversionStep, encoder_size, face_pool, fit_input

        if steps not in (None, 1):
            raise SgtoolError(f"{self.source} is a single-pass feature-space encoder: --encoder-steps must be 1 (or "
                              f"left out), got {steps}")
        if transform is not None:
            raise ValueError("a feature-space inversion renders the aligned crop its features were predicted for")
        x = fit_input(x.to(self.latent_avg.device, torch.float32), self.input_size)
        inversion = self.model.invert(x, self.generator, self.latent_avg)
        feature = self.model.edit_feature(inversion.fused)
        full = render_with_feature(self.generator, inversion.w, feature, self.layer)
        # The generator's latent_avg, as SFE adds it to the e4e's output.
        e4e = self.w_encoder.encoder
        e4e_codes = e4e(fit_input(x, encoder_size(e4e))) + self.latent_avg
        return [InversionStep(latents=inversion.w, images=face_pool(full), images_full=full if keep_full else None,
                              features={"features": feature, "fused": inversion.fused, "e4e_latent": e4e_codes})]


def load_feature_inverter(path, device="cpu", network=None, w_encoder=None) -> FeatureStyleInverter:
    """SFE for inversion: its file, the StyleGAN2 generator it edits (`network`) and the e4e whose codes measure
    edits (`w_encoder`); both required, SFE files hold neither."""
    from ..loading import load_generator
    from .loading import build_inverter, read_encoder_checkpoint

    if network is None:
        raise CheckpointError(f"{path} is a StyleFeatureEditor file, which holds no generator: pass the generator "
                              "it was trained with as --network (SFE's release: stylegan2-ffhq-config-f.pt)")
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

    features: torch.Tensor  # [C, S, S] the reconstruction's F
    fused: torch.Tensor  # [C, S, S] the editor's input
    e4e_latent: torch.Tensor  # [num_ws, w_dim] the codes edits are measured with
    editor: str  # the SFE file that made them (its feature editor carries the edits)
    layer: FeatureLayer  # where F goes in the generator


def save_features(features: dict[str, torch.Tensor], layer: FeatureLayer, path: Path, record: dict) -> Path:
    """NAME_features.safetensors: `features` (the generator's activation at `layer` an SFE inversion renders with),
    `fused` and `e4e_latent` (what an edit needs), and as metadata what produced them, so that an edit can check
    the file belongs to its generator."""
    from safetensors.torch import save_file

    from ...utils.io import atomic_path

    metadata = {"format": FEATURES_FORMAT, "layer": layer.name,
                "shape": "x".join(map(str, features["features"].shape)), **{k: str(v) for k, v in record.items()}}
    with atomic_path(path) as tmp:
        save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in features.items()}, str(tmp),
                  metadata=metadata)
    return Path(path)


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
    layer = next((found for found in feature_layers(generator) if found.name == meta.get("layer")), None)
    shape = (layer.channels, layer.size, layer.size) if layer is not None else None
    if layer is None or tuple(tensors["features"].shape) != shape or tuple(tensors["fused"].shape) != shape \
            or tuple(tensors["e4e_latent"].shape) != (generator.num_ws, generator.w_dim):
        here = ", ".join(f"{found.name} ({found.channels} x {found.size}px)" for found in feature_layers(generator))
        raise SgtoolError(f"{path} holds features of another generator or layer ({meta.get('layer')}, "
                          f"{list(tensors['features'].shape)}); this generator's layers are {here}: invert again "
                          "with --network set to it")
    if not all(torch.isfinite(t).all() for t in tensors.values()):
        raise SgtoolError(f"{path} holds NaN or infinite values; invert the photo again")
    return SavedFeatures(tensors["features"], tensors["fused"], tensors["e4e_latent"], meta.get("encoder", ""),
                         layer)
