"""CLIP (open_clip_torch) for text edits and for building directions: weights read without running code.

Text features follow the references: each prompt is written into every template ("a photo of a
{}."), each template's features are normalised, averaged and normalised again; the text direction
is the normalised difference of the target's and the neutral prompt's features. Images go to CLIP
as stylegan3-editing's create_delta_i_c does: bicubic resize to CLIP's input size (corners
aligned), [-1, 1] -> [0, 1] clamped, CLIP's mean/std normalisation.

Weights: a safetensors file (preferred; open_clip's `open_clip_model.safetensors`), a torch state
dict (read weights-only), or a TorchScript archive such as OpenAI's `ViT-B-32.pt`, whose tensors
are read out of the archive with a restricted unpickler; its code is never loaded. The templates
file is the references' `templates.txt`, one template per line.
"""

from __future__ import annotations

import collections
import hashlib
import json
import pickle
import string
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from safetensors import SafetensorError

from ..errors import SgtoolError
from ..models.safe_pickle import UnsafePickleError, safe_torch_load

CLIP_MODEL = "ViT-B-32"
CLIP_WEIGHTS = "clip-vit-b-32-openai"  # registry names
TEMPLATES = "styleclip-templates"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TEXT_BATCH = 128
# A one-block CLIP with ViT-B-32's 512 features and tokenizer: with random weights it stands in for CLIP in the
# tests and the offline demo (fast to build and to run hundreds of images through; its edits mean nothing).
TINY_TEST_CLIP = {"embed_dim": 512,
                  "vision_cfg": {"image_size": 224, "layers": 1, "width": 64, "patch_size": 32, "head_width": 32},
                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}


@dataclass
class ClipEncoder:
    """An open_clip CLIP model (eval mode) and its tokenizer."""

    model: torch.nn.Module
    tokenizer: Callable

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def image_size(self) -> tuple[int, int]:
        size = self.model.visual.image_size
        return (size, size) if isinstance(size, int) else tuple(size)

    @property
    def features(self) -> int:
        return int(self.model.text_projection.shape[1])

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        parts = [self.model.encode_text(self.tokenizer(list(texts[i:i + TEXT_BATCH])).to(self.device))
                 for i in range(0, len(texts), TEXT_BATCH)]
        return torch.cat(parts).float()

    def prompt_features(self, prompt: str, templates: Sequence[str]) -> torch.Tensor:
        """Unit [features]: the template-averaged text features of `prompt`."""
        features = self.encode_text([template.format(prompt) for template in templates])
        mean = (features / features.norm(dim=-1, keepdim=True)).mean(dim=0)
        return mean / mean.norm()

    def text_direction(self, target: str, neutral: str, templates: Sequence[str]) -> torch.Tensor:
        """Unit [features]: delta_i, from the neutral prompt towards the target."""
        delta = self.prompt_features(target, templates) - self.prompt_features(neutral, templates)
        norm = delta.norm()
        if norm == 0:
            raise SgtoolError(f"--text {target!r} and --neutral {neutral!r} give the same CLIP features; "
                              "describe the change in the target text")
        return delta / norm

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Raw CLIP image features [N, features] of generator images (NCHW, [-1, 1])."""
        x = F.interpolate(images.to(self.device, torch.float32), size=self.image_size, mode="bicubic",
                          align_corners=True)
        x = ((x + 1) / 2).clamp(0, 1)
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        return self.model.encode_image((x - mean) / std).float()

    def fingerprint(self) -> str:
        """SHA-256 of the weights: tells a resumed build whether it still has the same CLIP."""
        return weights_digest(self.model)


def weights_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_templates(path) -> list[str]:
    """The prompt templates, one per line, each with a `{}` for the prompt (the references' templates.txt)."""
    path = Path(path)
    if not path.is_file():
        raise SgtoolError(f"templates file {path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise SgtoolError(f"templates file {path} is not UTF-8 text") from None
    templates = [line for line in lines if line.strip()]
    bad = next((t for t in templates if not _one_plain_field(t)), None)
    if not templates or bad is not None:
        raise SgtoolError(f"templates file {path} needs one template per line with one {{}} for the text (no "
                          "other {...} fields)" + (f"; got {bad!r}" if bad is not None else ""))
    return templates


def _one_plain_field(template: str) -> bool:
    """Exactly one `{}` (no name, index, conversion or format) and no other replacement field."""
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError:  # an unmatched brace
        return False
    return fields == [("", "", None)]


def resolve_templates(ref=TEMPLATES) -> list[str]:
    """The templates from a file or registry name (the references' templates.txt by default)."""
    from ..hub import resolve_checkpoint

    return load_templates(resolve_checkpoint(ref, kind="styleclip"))


# --- weights ---------------------------------------------------------------------------------------

class _ScriptObject:
    """A TorchScript module as stored in its archive: attributes only (its class and code are never loaded)."""


def _as_list(values):
    return list(values)


def _restore_type_tag(value, _type):
    return value


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
_SCRIPT_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch.jit._pickle", "restore_type_tag"): _restore_type_tag,
    **{("torch.jit._pickle", f"build_{kind}list"): _as_list for kind in ("int", "float", "bool", "tensor", "double")},
    **{("torch", name): dtype for name, dtype in _STORAGE_DTYPES.items()},
}
MAX_MODULE_DEPTH = 32


class _ScriptUnpickler(pickle.Unpickler):
    def __init__(self, stream, archive: zipfile.ZipFile, prefix: str):
        super().__init__(stream)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module, name):
        if module == "__torch__" or module.startswith("__torch__."):
            return _ScriptObject
        try:
            return _SCRIPT_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"{module}.{name}") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise pickle.UnpicklingError("unexpected persistent id in a TorchScript archive")
        _, dtype, key, _location, numel = pid
        raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
        data = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        if data.numel() < int(numel):
            raise pickle.UnpicklingError(f"storage {key} is shorter than recorded")
        return torch.storage.TypedStorage(wrap_storage=data.untyped_storage(), dtype=dtype, _internal=True)


def _script_tensors(obj, prefix: str, out: dict, depth: int = 0) -> dict:
    if depth > MAX_MODULE_DEPTH:
        raise pickle.UnpicklingError(f"modules nest deeper than {MAX_MODULE_DEPTH} levels")
    for name, value in vars(obj).items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, _ScriptObject):
            _script_tensors(value, f"{prefix}{name}.", out, depth + 1)
    return out


def _torchscript_state(archive: zipfile.ZipFile, data_pkl: str) -> dict:
    prefix = data_pkl[: -len("data.pkl")]
    with archive.open(data_pkl) as stream:
        root = _ScriptUnpickler(stream, archive, prefix).load()
    if not isinstance(root, _ScriptObject):
        raise pickle.UnpicklingError("the archive's root is not a module")
    return _script_tensors(root, "", {})


def read_clip_weights(path) -> dict[str, torch.Tensor]:
    """A CLIP state dict from safetensors, a weights-only torch file or a TorchScript archive (tensors only)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(9)
    try:
        if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 2 ** 28:
            from safetensors.torch import load_file

            return load_file(str(path))
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                if any("/code/" in name or name.endswith("/constants.pkl") for name in names):
                    data_pkl = next((n for n in names if n.endswith("/data.pkl") and n.count("/") == 1), None)
                    if data_pkl is None:
                        raise pickle.UnpicklingError("TorchScript archive without data.pkl")
                    return _torchscript_state(archive, data_pkl)
        state = safe_torch_load(path)
    except UnsafePickleError as exc:
        raise SgtoolError(f"refusing to load CLIP weights {path}: it references code '{exc.qualname}' "
                          f"(use the safetensors weights, registry name {CLIP_WEIGHTS})") from None
    except (pickle.UnpicklingError, RuntimeError, OSError, ValueError, EOFError, zipfile.BadZipFile,
            SafetensorError) as exc:
        raise SgtoolError(f"{path} is not a readable CLIP weights file ({(str(exc).splitlines() or ['?'])[0]})") \
            from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise SgtoolError(f"{path} holds no CLIP state dict")
    return {str(k).removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def build_clip(model: str | Mapping = CLIP_MODEL, quick_gelu: bool = True):
    """An open_clip CLIP (random weights) and its tokenizer: `model` an open_clip config name or config dict."""
    import open_clip

    config = open_clip.get_model_config(model) if isinstance(model, str) else dict(model)
    if config is None or set(config) - {"embed_dim", "vision_cfg", "text_cfg"} or "hf_model_name" in config.get(
            "text_cfg", {}):
        raise SgtoolError(f"CLIP model {model!r} is not an open_clip CLIP configuration (e.g. {CLIP_MODEL})")
    try:
        network = open_clip.model.CLIP(**config, quick_gelu=quick_gelu)
    except (TypeError, ValueError, AttributeError) as exc:
        raise SgtoolError(f"CLIP model config cannot build an open_clip CLIP ({exc})") from None
    context = int(config["text_cfg"].get("context_length", 77))
    return network, open_clip.tokenizer.SimpleTokenizer(context_length=context)


def clip_model(text: str) -> str | dict:
    """`--clip`: an open_clip model name, or a .json file holding an open_clip model config (a custom CLIP)."""
    path = Path(str(text)).expanduser()
    if path.suffix.lower() != ".json":
        return str(text)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SgtoolError(f"CLIP model config {path} does not exist; give an open_clip model name such as "
                          f"{CLIP_MODEL} or an existing .json config") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SgtoolError(f"CLIP model config {path} is not readable JSON ({type(exc).__name__})") from None
    if not isinstance(config, dict):
        raise SgtoolError(f"CLIP model config {path} must be a JSON object (embed_dim, vision_cfg, text_cfg)")
    _check_sizes(config, path)
    return config


# Bounds on a custom CLIP's sizes, far above OpenAI's largest and low enough that building it stays small.
CLIP_SIZE_LIMITS = {"embed_dim": 4096, "width": 4096, "layers": 64, "heads": 64, "head_width": 1024,
                    "image_size": 1024, "patch_size": 256, "context_length": 1024, "vocab_size": 1_000_000}


def _check_sizes(config: dict, path: Path) -> None:
    """Every size a positive whole number within CLIP_SIZE_LIMITS, the image a whole number of patches and the text
    width a whole number of heads: a config that would build nonsense or exhaust memory is one line."""
    sections = {"": config, "vision_cfg.": config.get("vision_cfg", {}), "text_cfg.": config.get("text_cfg", {})}
    for prefix, section in sections.items():
        if not isinstance(section, dict):
            raise SgtoolError(f"CLIP model config {path}: {prefix.rstrip('.')} must be an object")
        for key, limit in CLIP_SIZE_LIMITS.items():
            value = section.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= limit:
                raise SgtoolError(f"CLIP model config {path}: {prefix}{key} = {value!r} must be a whole number from 1 "
                                  f"to {limit}")
    vision, text = sections["vision_cfg."], sections["text_cfg."]
    if "image_size" in vision and "patch_size" in vision and vision["image_size"] % vision["patch_size"]:
        raise SgtoolError(f"CLIP model config {path}: vision_cfg.image_size {vision['image_size']} is not a multiple "
                          f"of patch_size {vision['patch_size']}")
    if "width" in text and "heads" in text and text["width"] % text["heads"]:
        raise SgtoolError(f"CLIP model config {path}: text_cfg.width {text['width']} is not a multiple of heads "
                          f"{text['heads']}")


def load_clip(weights, model: str | Mapping = CLIP_MODEL, device="cpu", quick_gelu: bool = True) -> ClipEncoder:
    """CLIP from a weights file or registry name (downloaded through the registry's cache; nothing else goes to
    the network). OpenAI's weights, which the references use, need `quick_gelu` (the default)."""
    from ..hub import resolve_checkpoint

    path = resolve_checkpoint(weights, kind="clip")
    state = read_clip_weights(path)
    network, tokenizer = build_clip(model, quick_gelu)
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or wrong:
        detail = (f"missing {', '.join(missing[:3])}" if missing else
                  f"{wrong[0]} is {list(state[wrong[0]].shape)}, expected {list(expected[wrong[0]].shape)}")
        raise SgtoolError(f"{path} does not hold {model if isinstance(model, str) else 'these'} CLIP weights "
                          f"({detail}{' ...' if len(missing) > 3 else ''})")
    network.load_state_dict({k: state[k].to(torch.float32) for k in expected})
    return ClipEncoder(network.eval().requires_grad_(False).to(device), tokenizer)
