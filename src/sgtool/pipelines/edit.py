"""`sgtool edit` as a library: edit W+ latents, render them (aligned or unaligned), sweep strengths,
discover SeFa directions and train InterFaceGAN boundaries.

Typical use from a notebook:

    G = load_generator("stylegan3-r-ffhq-1024x1024.pkl")
    edits = prepare_edits(G, ["age=+2"], DirectionRegistry.from_config(load_config("edit")))
    image = render(G, apply_edits(ws, edits), transform=inverse_transform)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..editing.boundary import read_scores_csv, train_boundary
from ..editing.directions import (
    DirectionRegistry,
    Edit,
    apply_edits,
    edit_label,
    format_strength,
    parse_edit,
    parse_named_file,
    parse_sweep,
    resolve_direction,
)
from ..editing.sefa import sefa_directions
from ..editing.stylespace import (
    StyleEdit,
    apply_style_edits,
    capture_styles,
    parse_style,
    render_styles,
    resolve_style_edit,
    style_layers,
    style_std,
)
from ..errors import SgtoolError
from ..latents import load_latents
from ..utils.io import atomic_path, save_image, save_npy, to_uint8


# ---------------------------------------------------------------------------------------------
# Rendering


def _device(generator) -> torch.device:
    return next(generator.parameters()).device


def check_transform(generator, transform) -> torch.Tensor | None:
    """A [3,3] / [N,3,3] float tensor on the generator's device; refused for StyleGAN2."""
    if transform is None:
        return None
    if generator.kind != "stylegan3":
        raise SgtoolError("a landmarks transform needs a StyleGAN3 network (StyleGAN2 has no input transform); "
                          "drop --transforms or pass --aligned")
    transform = torch.as_tensor(np.asarray(transform, dtype=np.float32) if not isinstance(transform, torch.Tensor)
                                else transform, dtype=torch.float32)
    if transform.shape[-2:] != (3, 3):
        raise SgtoolError(f"a landmarks transform must be 3x3, got shape {list(transform.shape)}")
    return transform.to(_device(generator))


@torch.no_grad()
def render(generator, ws, transform=None, noise_mode: str = "const") -> torch.Tensor:
    """W+ codes ([num_ws, w_dim] or [N, num_ws, w_dim]) -> images [N, 3, R, R] in about [-1, 1].

    `transform` (the landmarks inverse transform) renders the unaligned view (StyleGAN3 only).
    """
    ws = torch.as_tensor(ws, dtype=torch.float32).to(_device(generator))
    if ws.ndim == 2:
        ws = ws.unsqueeze(0)
    transform = check_transform(generator, transform)
    extra = {} if transform is None else {"transform": transform}
    return generator.synthesis(ws, noise_mode=noise_mode, **extra)


# ---------------------------------------------------------------------------------------------
# Landmarks transforms


def load_transforms(path) -> dict[str, np.ndarray]:
    """name -> inverse landmarks transform (what goes into synthesis), keyed by the aligned image's name."""
    from .align import read_landmarks_transforms

    return {entry.name: entry.inverse_transform for entry in read_landmarks_transforms(path)}


def match_transform(name: str, transforms: dict[str, np.ndarray]) -> np.ndarray | None:
    """The transform recorded for a latent's name: exact key, else same file stem (photo_face0_aligned
    matches photo_face0_aligned.png, 0001.jpg matches 0001.png)."""
    if name in transforms:
        return transforms[name]
    stem = Path(name).stem
    for key, value in transforms.items():
        if Path(key).stem in (name, stem):
            return value
    return None


def transforms_from_invert_record(latent_file: Path) -> dict[str, np.ndarray]:
    """Transforms an `invert.json` beside the latents records, if any: entries with an
    'inverse_transform', named by their 'name' or the 'latent'/'aligned' file they mention, or an
    'alignment'/'transforms' file it points to. Empty when there is none."""
    from .align import inverse_matrix

    record = latent_file.parent / "invert.json"
    if not record.is_file():
        return {}
    try:
        data = json.loads(record.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    found: dict[str, np.ndarray] = {}

    def visit(node):
        if isinstance(node, dict):
            if "inverse_transform" in node:
                try:
                    matrix = inverse_matrix(node["inverse_transform"], str(record))
                except SgtoolError:
                    matrix = None
                if matrix is not None:
                    for key in ("name", "latent", "aligned"):
                        if isinstance(node.get(key), str):
                            label = Path(node[key]).name
                            found.setdefault(label.removesuffix(".npy").removesuffix("_latent"), matrix)
                            found.setdefault(label, matrix)
            for key in ("alignment", "transforms"):
                if isinstance(node.get(key), str):
                    target = Path(node[key])
                    target = target if target.is_absolute() else record.parent / target
                    if target.is_file():
                        try:
                            for name, matrix in load_transforms(target).items():
                                found.setdefault(name, matrix)
                        except SgtoolError:
                            pass
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(data)
    return found


# ---------------------------------------------------------------------------------------------
# Grids and animations


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def labelled_grid(rows: Sequence[Sequence[np.ndarray]], labels: Sequence[str]) -> np.ndarray:
    """Tile uint8 HWC images (rows x columns) under a header band with one label per column."""
    height, width = rows[0][0].shape[:2]
    font_size = max(10, width // 14)
    header = font_size + 8
    canvas = Image.new("RGB", (width * len(labels), header + height * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font(font_size)
    for col, label in enumerate(labels):
        text = label
        while len(text) > 1 and draw.textlength(text, font=font) > width - 4:
            text = text[:-1]
        offset = (width - draw.textlength(text, font=font)) / 2
        draw.text((col * width + offset, 4), text, fill=(0, 0, 0), font=font)
    for r, row in enumerate(rows):
        for col, image in enumerate(row):
            canvas.paste(Image.fromarray(image), (col * width, header + r * height))
    return np.asarray(canvas)


def write_mp4(frames: Sequence[np.ndarray], path, fps: float = 8.0) -> Path:
    """uint8 HWC frames -> H.264 mp4 (imageio-ffmpeg), written atomically."""
    import imageio.v2 as imageio

    with atomic_path(path) as tmp:
        writer = imageio.get_writer(str(tmp), format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                    quality=8, macro_block_size=16, ffmpeg_log_level="error")
        try:
            for frame in frames:
                writer.append_data(np.ascontiguousarray(frame))
        finally:
            writer.close()
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Edit requests


@dataclass
class EditRequest:
    """What to do to every input latent; build with `prepare_request`."""

    edits: list[Edit] = field(default_factory=list)
    style_edits: list[StyleEdit] = field(default_factory=list)
    layers: list[int] | None = None
    mode: str = "auto"
    sweep_name: str | None = None
    sweep_strengths: np.ndarray | None = None
    sweep_direction: Edit | None = None  # direction sweeps
    sweep_style: StyleEdit | None = None  # style-channel sweeps (LAYER:CHANNEL)
    style_scale: list[torch.Tensor] | None = None  # per-channel unit of style edits (std), None = raw
    noise_mode: str = "const"

    @property
    def label(self) -> str:
        return edit_label(list(self.edits) + list(self.style_edits))


def resolve_edit(generator, edit: Edit, registry: DirectionRegistry, extra: dict, hint: str) -> Edit:
    direction, path = resolve_direction(edit.name, generator, registry, extra, hint)
    return Edit(edit.name, edit.strength, direction, str(path))


def prepare_edits(generator, texts: Sequence[str], registry: DirectionRegistry, extra: dict | None = None,
                  hint: str = "") -> list[Edit]:
    """['age=+2', 'smile=-1'] -> resolved Edits (directions loaded and checked against the generator)."""
    return [resolve_edit(generator, parse_edit(text), registry, extra or {}, hint) for text in texts]


def prepare_request(generator, registry: DirectionRegistry, edits: Sequence[str] = (), styles: Sequence[str] = (),
                    directions: Sequence[str] = (), sweep: str | None = None, layers: Sequence[int] | None = None,
                    mode: str = "auto", style_units: str = "std", style_std_samples: int = 2000,
                    noise_mode: str = "const", hint: str = "") -> EditRequest:
    """Parse and resolve everything (directions loaded, layers and shapes checked) before rendering:
    bad input fails here, with nothing written."""
    if mode not in ("auto", "w", "wplus"):
        raise SgtoolError(f"--mode must be auto, w or wplus, got {mode!r}")
    if style_units not in ("std", "raw"):
        raise SgtoolError(f"style_units must be std or raw, got {style_units!r}")
    if noise_mode not in ("const", "random", "none"):
        raise SgtoolError(f"noise_mode must be const, random or none, got {noise_mode!r}")
    extra = dict(parse_named_file(text) for text in directions)
    layer_list = list(layers) if layers is not None else None
    if layer_list is not None:
        bad = [i for i in layer_list if not 0 <= i < generator.num_ws]
        if bad:
            raise SgtoolError(f"--layers {bad[0]} is out of range: this generator has style inputs "
                              f"0-{generator.num_ws - 1}")
    resolved = prepare_edits(generator, edits, registry, extra, hint)
    names = [e.name for e in resolved]
    if len(set(names)) != len(names):
        raise SgtoolError(f"--edit names a direction twice ({', '.join(names)}); give each once")
    s_layers = style_layers(generator)
    style_edits = [resolve_style_edit(parse_style(text), s_layers) for text in styles]
    request = EditRequest(edits=resolved, style_edits=style_edits, layers=layer_list, mode=mode,
                          noise_mode=noise_mode)
    if sweep:
        name, strengths = parse_sweep(sweep)
        request.sweep_name, request.sweep_strengths = name, strengths
        if ":" in name:
            request.sweep_style = resolve_style_edit(parse_style(f"{name}=0"), s_layers)
        else:
            if name in names:
                raise SgtoolError(f"--sweep {name} also appears in --edit; sweep it or edit it, not both")
            request.sweep_direction = resolve_edit(generator, Edit(name, 0.0), registry, extra, hint)
    if style_units == "std" and (style_edits or request.sweep_style):
        request.style_scale = style_std(generator, style_std_samples)
    # Catch shape/mode mismatches before any rendering starts.
    probe = torch.zeros([generator.num_ws, generator.w_dim])
    checks = [Edit(e.name, 1.0, e.direction, e.source) for e in resolved]
    if request.sweep_direction is not None:
        checks.append(Edit(name, 1.0, request.sweep_direction.direction, request.sweep_direction.source))
    apply_edits(probe, checks, layer_list, mode)
    return request


@torch.no_grad()
def edit_and_render(generator, ws: torch.Tensor, edits: Sequence[Edit], style_edits: Sequence[StyleEdit],
                    request: EditRequest, transform=None):
    """ws [N, num_ws, w_dim] -> (images [N, 3, R, R], edited ws, edited styles or None)."""
    edited = apply_edits(ws, edits, request.layers, request.mode)
    transform = check_transform(generator, transform)
    if not any(e.strength != 0 for e in style_edits):
        return render(generator, edited, transform, request.noise_mode), edited, None
    styles, _ = capture_styles(generator, edited, transform, request.noise_mode)
    styles = apply_style_edits(styles, style_edits, request.style_scale)
    return render_styles(generator, styles, transform, request.noise_mode), edited, styles


def _save_styles(generator, styles, path) -> Path:
    arrays = {f"{layer.index:02d}_{layer.name}": styles[layer.index][0].cpu().numpy()
              for layer in style_layers(generator)}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return Path(path)


def _edit_records(edits: Sequence[Edit], style_edits: Sequence[StyleEdit], request: EditRequest) -> dict:
    return {"edits": [{"name": e.name, "strength": e.strength, "direction": e.source} for e in edits],
            "style_edits": [{"layer": e.index, "channel": e.channel, "strength": e.strength,
                             "units": "std" if request.style_scale is not None else "raw"} for e in style_edits]}


@dataclass
class EditOutcome:
    items: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    grid: str | None = None
    animations: list[str] = field(default_factory=list)


def run_edits(generator, inputs: Sequence[Path], request: EditRequest, outdir: Path,
              transforms: dict[str, np.ndarray] | None = None, use_invert_records: bool = True,
              aligned: bool = False, step: int = -1, animate: bool = False, fps: float = 8.0,
              batch_size: int = 8, on_item: Callable[[str], None] | None = None) -> EditOutcome:
    """Edit every latent of every input file; a bad file or entry is recorded and the batch goes on."""
    outdir = Path(outdir)
    outcome = EditOutcome()
    sweep_rows: list[list[np.ndarray]] = []
    single = bool(request.edits or request.style_edits)
    device = _device(generator)
    for path in inputs:
        path = Path(path)
        try:
            latents = load_latents(path, generator.num_ws, generator.w_dim, step)
        except SgtoolError as exc:
            outcome.failures.append({"input": str(path), "error": str(exc)})
            if on_item:
                on_item(str(path))
            continue
        known = dict(transforms) if transforms is not None else None
        if known is None and use_invert_records and not aligned:
            known = transforms_from_invert_record(path) or None
        for name, latent in latents.items():
            try:
                transform = None
                if not aligned and known is not None:
                    transform = match_transform(name, known)
                    if transform is None and transforms is not None:
                        raise SgtoolError(f"no landmarks transform for {name!r} in the --transforms file "
                                          f"(it has {', '.join(list(known)[:3])}{' ...' if len(known) > 3 else ''});"
                                          " pass --aligned to render the aligned view")
                check_transform(generator, transform)
                ws = torch.from_numpy(latent).to(device).unsqueeze(0)
                record = {"input": str(path), "name": name,
                          "transform": transform.tolist() if transform is not None else None}
                if single:
                    record.update(_write_single(generator, ws, name, request, outdir, transform))
                if request.sweep_strengths is not None:
                    row = _sweep_row(generator, ws, request, transform, batch_size)
                    sweep_rows.append(row)
                    if animate:
                        video = outdir / f"{output_stem(name)}_{_sweep_tag(request)}.mp4"
                        outcome.animations.append(str(write_mp4(row, video, fps)))
                        record["animation"] = str(video)
                outcome.items.append(record)
            except SgtoolError as exc:
                outcome.failures.append({"input": str(path), "name": name, "error": str(exc)})
            if on_item:
                on_item(f"{path}:{name}")
    if sweep_rows:
        labels = [f"{request.sweep_name}={format_strength(s)}" for s in request.sweep_strengths]
        grid = labelled_grid(sweep_rows, labels)
        outcome.grid = str(save_image(grid, outdir / f"{_sweep_tag(request)}.png"))
    return outcome


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def output_stem(name: str) -> str:
    """A latent's name as a file-name stem: stylegan3-editing keys are image file names ('0001.jpg')."""
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix.lower() in _IMAGE_SUFFIXES else name
    return stem.replace("/", "_").replace("\\", "_") or "latent"


def _sweep_tag(request: EditRequest) -> str:
    base = f"sweep_{request.sweep_name.replace(':', 'c')}"
    return f"{base}_{request.label}" if request.label else base


def _write_single(generator, ws, name, request, outdir, transform) -> dict:
    images, edited, styles = edit_and_render(generator, ws, request.edits, request.style_edits, request, transform)
    stem = f"{output_stem(name)}_{request.label}"
    record = {"image": str(save_image(to_uint8(images)[0], outdir / f"{stem}.png"))}
    record.update(_edit_records(request.edits, request.style_edits, request))
    if styles is None:
        record["latent"] = str(save_npy(edited[0].cpu().numpy().astype(np.float32), outdir / f"{stem}.npy"))
    else:
        # W+ cannot express a style-channel edit: keep the edited S instead.
        record["styles"] = str(_save_styles(generator, styles, outdir / f"{stem}_styles.npz"))
    return record


def _sweep_row(generator, ws, request: EditRequest, transform, batch_size: int) -> list[np.ndarray]:
    """One image per sweep strength, each with the base edits plus the swept one."""
    strengths = [float(s) for s in request.sweep_strengths]
    row = []
    if request.sweep_direction is not None:
        for start in range(0, len(strengths), batch_size):
            edited = torch.cat([apply_edits(ws, [*request.edits, replace(request.sweep_direction, strength=s)],
                                            request.layers, request.mode)
                                for s in strengths[start:start + batch_size]])
            images, _, _ = edit_and_render(generator, edited, [], request.style_edits, request, transform)
            row.extend(to_uint8(images))
    else:
        for s in strengths:
            styles = [*request.style_edits, replace(request.sweep_style, strength=s)]
            images, _, _ = edit_and_render(generator, ws, request.edits, styles, request, transform)
            row.extend(to_uint8(images))
    return row


# ---------------------------------------------------------------------------------------------
# SeFa discovery and boundary training


def discover_sefa(generator, outdir: Path, top: int = 10, layers: Sequence[int] | None = None,
                  preview_ws: torch.Tensor | None = None, preview_strengths: np.ndarray | None = None,
                  transform=None, noise_mode: str = "const") -> dict:
    """Write sefa_00.npy ... ([1, w_dim] unit directions, strongest first), sefa.json and a preview grid
    (rows = directions, columns = strengths applied to `preview_ws` on the chosen layers)."""
    outdir = Path(outdir)
    directions, eigenvalues, names = sefa_directions(generator, layers, top)
    files = [str(save_npy(d[None].astype(np.float32), outdir / f"sefa_{k:02d}.npy")) for k, d in enumerate(directions)]
    summary = {"method": "sefa", "layers": list(layers) if layers is not None else None, "style_layers": names,
               "eigenvalues": eigenvalues.tolist(), "directions": files}
    if preview_ws is not None:
        strengths = preview_strengths if preview_strengths is not None else np.linspace(-5, 5, 5)
        rows = []
        for k, direction in enumerate(directions):
            edited = torch.cat([apply_edits(preview_ws, [Edit(f"sefa{k}", float(s), direction[None])], layers)
                                for s in strengths])
            rows.append(list(to_uint8(render(generator, edited, transform, noise_mode))))
        grid = labelled_grid(rows, [f"{format_strength(s)}" for s in strengths])
        summary["preview"] = str(save_image(grid, outdir / "sefa_preview.png"))
        summary["preview_strengths"] = [float(s) for s in strengths]
    return summary


def train_boundary_from_csv(csv_path: Path, outdir: Path, name: str | None = None, num_ws: int | None = None,
                            w_dim: int | None = None, ratio: float = 0.02, split: float = 0.7, seed: int = 0,
                            space: str = "w") -> dict:
    """scores CSV -> NAME_boundary.npy ([1, w_dim], or [num_ws, w_dim] for space wplus) and its record."""
    latents, scores, latent_shape = read_scores_csv(csv_path, num_ws, w_dim, space)
    result = train_boundary(latents, scores, ratio, split, seed)
    normal = result.normal.reshape(latent_shape) if space == "wplus" else result.normal[None]
    name = name or Path(csv_path).stem
    path = save_npy(normal.astype(np.float32), Path(outdir) / f"{name}_boundary.npy")
    return {"boundary": str(path), "name": name, "space": space, "samples": result.num_samples,
            "train_per_class": result.train_per_class, "val_per_class": result.val_per_class,
            "val_accuracy": result.val_accuracy, "remaining_accuracy": result.remaining_accuracy,
            "ratio": ratio, "split": split, "seed": seed, "scores": str(csv_path)}
