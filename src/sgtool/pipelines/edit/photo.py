"""`sgtool edit photo.jpg`: every face of a photo aligned, inverted, optionally tuned (PTI on its unaligned crop),
edited, rendered through its landmarks transform and pasted back under the video pipeline's feathered head mask.
Pixels outside the masks keep their values (a JPEG output is re-encoded, at `jpeg_quality`).

    summary = run_edit(plan_edit(["group.jpg"], EditSettings(encoder="restyle-e4e-sg3-ffhq", edits=["age=+2"])))

Per photo NAME, in OUTDIR: NAME_LABEL.EXT (the edited photo, the input's size, upright, its format),
NAME_LABEL_side_by_side.png, NAME_faceK_before.png / NAME_faceK_LABEL.png (each face's crop as in the photo
and edited), with --sweep NAME_sweep_....png (full photos) and with --animate an mp4. What an edit does not
change is kept in OUTDIR/faces/NAME/ under keys of the settings it came from: the alignment, every face's
latent and (with --tune) its tuned generator, so another edit of the same photo only renders
(`sgtool edit OUTDIR --edit ...` edits the photos recorded in OUTDIR/photo_edits.json again).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from pydantic import ValidationError

from ...errors import SgtoolError
from ...latents import load_latents, load_npy
from ...models import load_generator, save_generator
from ...progress import SILENT, Reporter
from ...settings import EditSettings
from ...utils.io import digest, file_identity, save_image, save_npy, to_uint8, write_json
from ...utils.records import read_json
from ..align.run import DEFAULT_MIN_FACE, align_image
from ..shared.batch import Batch, Item
from .requests import EditRequest
from .sweeps import labelled_grid, sweep_tag, write_animation
from ..shared.images import generator_target, read_image
from .paste import head_mask, paste
from .regions import PhotoRegions, face_local_edit
from ..shared.render import render

PHOTO_RECORD = "photo_edits.json"  # the photos and settings of the photo runs into a folder
CACHE_DIR = "faces"
GRID_WIDTH = 768  # photos are shrunk to at most this width in sweep grids
# The settings a re-run (`sgtool edit OUTDIR --edit ...`) takes from the record unless given again.
# What a re-edit of a photo folder takes from its record unless given again: the models, how faces were found,
# inverted and tuned, and where edit names come from (--direction NAME=FILE, the CLIP of text edits).
RECORDED = ("network", "encoder", "w_encoder", "faces", "tune_steps", "pti", "invert", "mask", "jpeg_quality", "device",
            "directions", "directions_dir", "direction_set", "clip_directions", "clip", "clip_weights", "templates")


@dataclass
class PhotoFace:
    """One face of a photo, ready to render: where it sits, its latent and the generator that renders it."""

    index: int
    record: dict  # the alignment record (quads, transforms)
    mask: tuple  # (soft head mask, its (y0, y1, x0, x1) in the photo): where the render is pasted
    crop: np.ndarray  # the unaligned crop, uint8
    latent: torch.Tensor  # [num_ws, w_dim]
    generator: torch.nn.Module
    features: object = None  # SavedFeatures of a feature-space inversion (its edits go through the feature editor)
    landmarks: np.ndarray | None = None  # the face mesh in photo pixels (named --region parts)

    def paste_quad(self) -> np.ndarray:
        """The square the render covers in the photo: the unaligned crop (StyleGAN3) or the aligned quad."""
        key = "crop_quad" if self.generator.kind == "stylegan3" else "quad"
        return np.asarray(self.record[key], np.float64)

    def transform(self) -> np.ndarray | None:
        if self.generator.kind != "stylegan3":
            return None
        return np.asarray(self.record["inverse_transform"], np.float32)


def photo_suffix(path: Path) -> str:
    return path.suffix.lower() if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp") else ".png"


def recorded_run(folder: Path) -> dict | None:
    """The record of earlier photo runs into `folder` (None when there is none)."""
    path = Path(folder) / PHOTO_RECORD
    if not path.is_file():
        return None
    try:
        record = read_json(path)
        if not isinstance(record.get("photos"), list) or not isinstance(record.get("settings"), dict):
            raise ValueError("photos or settings missing")
        for photo in record["photos"]:
            # Photo files only: a recorded folder or glob (`/`, `../*`) would make a re-edit walk anything.
            if not isinstance(photo, str) or any(ch in photo for ch in "*?[") or not Path(photo).is_file():
                raise ValueError(f"{photo!r} is not a photo file")
    except (OSError, ValueError, AttributeError, RecursionError) as exc:
        raise SgtoolError(f"{path} is not a readable sgtool photo record ({exc}); edit the photos themselves") \
            from None
    return record


def resume_settings(record: dict, settings: EditSettings, given: frozenset[str], source: Path) -> EditSettings:
    """`settings` with the recorded models and inversion settings wherever this call did not give its own
    (`source`: the record's file, named when a recorded value is unusable)."""
    current = settings.model_dump()
    merged = dict(current)
    for key, value in record["settings"].items():
        if key not in RECORDED or key in given:
            continue
        if isinstance(value, dict):  # a section: the recorded one, with the keys given now on top
            value = json.loads(json.dumps(value))
            for dotted in given:
                if dotted.startswith(key + "."):
                    *path, last = dotted.split(".")[1:]
                    target, source = value, current[key]
                    for part in path:
                        target, source = target.setdefault(part, {}), source[part]
                    target[last] = source[last]
        merged[key] = value
    try:
        return EditSettings.model_validate(merged)
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise SgtoolError(f"{source}: recorded setting "
                          f"{'.'.join(map(str, problem['loc']))} is unusable ({problem['msg']}); give it again, or "
                          "edit the photos themselves into a new folder") from None


class PhotoEditor:
    """Edits one photo per call (a Batch item); the stages an edit does not change come from the cache."""

    def __init__(self, settings: EditSettings, generator, encoder, request: EditRequest, lpips_model=None,
                 reporter: Reporter = SILENT):
        self.settings, self.generator, self.encoder, self.request = settings, generator, encoder, request
        self.lpips_model, self.reporter = lpips_model, reporter
        self.outdir = Path(settings.outdir)
        self.models = {"network": _identity(settings.network), "encoder": _identity(settings.encoder),
                       "w_encoder": _identity(settings.w_encoder)}

    def __call__(self, item: Item) -> dict:
        photo = read_image(item.source)
        stages: dict[str, dict] = {}
        settings = self.settings
        # A region or scribble that does not fit the photo fails before any face is inverted.
        regions = PhotoRegions(settings, photo, item.source) \
            if settings.region is not None or settings.scribble is not None else None
        faces = self.faces(item, photo, stages)
        start = time.perf_counter()
        outputs, records = self.write_edits(item, photo, faces, regions)
        stages["render"] = {"seconds": round(time.perf_counter() - start, 3), "cached": False}
        return {"outputs": outputs, "faces": records, "stages": stages, "size": [photo.shape[1], photo.shape[0]]}

    # --- the cached stages -------------------------------------------------------------------------------

    def faces(self, item: Item, photo: np.ndarray, stages: dict) -> list[PhotoFace]:
        folder = self.outdir / CACHE_DIR / item.name
        aligned, stages["align"] = self._timed(lambda: self._align(item, photo, folder))
        chosen = self._chosen(item, aligned)
        faces, invert_cached, tune_cached = [], [], []
        start = time.perf_counter()
        for index in chosen:
            face_dir = folder / f"face{index}"
            latent, generator, features, cached = self._invert(face_dir, aligned[index])
            invert_cached.append(cached)
            if self.settings.tune_steps:
                generator, cached = self._tune(item, index, face_dir, aligned[index], latent)
                tune_cached.append(cached)
            mask = head_mask(aligned[index]["landmarks"], photo.shape, self.settings.mask)
            faces.append(PhotoFace(index, aligned[index]["record"], mask, aligned[index]["crop"], latent, generator,
                                   features, aligned[index]["landmarks"]))
        stages["invert"] = {"seconds": round(time.perf_counter() - start, 3), "cached": all(invert_cached),
                            "faces": len(chosen)}
        if self.settings.tune_steps:
            stages["tune"] = {"cached": all(tune_cached), "steps": self.settings.tune_steps}
        return faces

    @staticmethod
    def _timed(work):
        start = time.perf_counter()
        result, cached = work()
        return result, {"seconds": round(time.perf_counter() - start, 3), "cached": cached}

    def _chosen(self, item: Item, aligned: list[dict]) -> list[int]:
        if self.settings.faces is None:
            return list(range(len(aligned)))
        missing = [k for k in self.settings.faces if k >= len(aligned)]
        if missing:
            raise SgtoolError(f"{item.source} has {len(aligned)} face(s) (0-{len(aligned) - 1}, largest first); "
                              f"--face {missing[0]} is not among them")
        return list(self.settings.faces)

    def _align(self, item: Item, photo: np.ndarray, folder: Path) -> tuple[list[dict], bool]:
        settings = self.settings
        key = digest({"photo": file_identity(item.source), "size": self.generator.img_resolution,
                      "recipe": settings.invert.align_recipe})
        record_path = folder / "alignment.json"
        record = _read_json(record_path)
        if record.get("key") == key and all((folder / f"face{k}" / "crop.png").is_file()
                                            for k in range(len(record["faces"]))):
            return [self._cached_face(folder / f"face{k}", face) for k, face in enumerate(record["faces"])], True
        rejected: list = []
        found = align_image(photo, size=self.generator.img_resolution, recipe=settings.invert.align_recipe,
                            rejected=rejected)
        if not found:
            why = f" ({len(rejected)} candidate(s) rejected: {rejected[0].reason})" if rejected else ""
            raise SgtoolError(f"no face found in {item.source}{why}; faces need to be at least {DEFAULT_MIN_FACE} "
                              "px across and unobstructed (sgtool align shows what is found)")
        faces = []
        for k, face in enumerate(found):
            face_dir = folder / f"face{k}"
            save_image(face.aligned, face_dir / "aligned.png")
            save_image(face.crop, face_dir / "crop.png")
            save_npy(face.landmarks.astype(np.float32), face_dir / "landmarks.npy")
            faces.append({"record": face.record(), "aligned": face.aligned, "crop": face.crop,
                          "landmarks": face.landmarks})
        write_json({"key": key, "faces": [f["record"] for f in faces],
                    "rejected": [r.record() for r in rejected]}, record_path)
        return faces, False

    @staticmethod
    def _cached_face(face_dir: Path, record: dict) -> dict:
        """A face the folder's cache holds, its numbers checked (a damaged or crafted cache is one line)."""
        where = f"{face_dir.parent / 'alignment.json'} ({face_dir.name})"
        for key in ("quad", "crop_quad", "inverse_transform"):
            try:
                values = np.asarray(record[key], dtype=np.float64)
            except (KeyError, TypeError, ValueError):
                raise SgtoolError(f"{where}: {key} is not a list of numbers; delete {face_dir.parent} to align "
                                  "again") from None
            if not np.all(np.isfinite(values)):
                raise SgtoolError(f"{where}: {key} holds NaN or infinite values; delete {face_dir.parent} to align "
                                  "again")
        landmarks = load_npy(face_dir / "landmarks.npy")
        if not isinstance(landmarks, np.ndarray) or landmarks.ndim != 2 or landmarks.shape[1] != 2 \
                or not np.issubdtype(landmarks.dtype, np.floating) or not np.all(np.isfinite(landmarks)):
            raise SgtoolError(f"{face_dir / 'landmarks.npy'} is not an array of finite 2-D points; delete "
                              f"{face_dir.parent} to align again")
        return {"record": record, "aligned": read_image(face_dir / "aligned.png"),
                "crop": read_image(face_dir / "crop.png"), "landmarks": landmarks.astype(np.float64)}

    def _invert_key(self, face: dict) -> str:
        return digest({"face": face["record"], "models": self.models, "invert": self.settings.invert.record()})

    def _invert(self, face_dir: Path, face: dict):
        from ...models.encoders.sfe import save_features
        from ..invert.run import Face, invert_faces

        key = self._invert_key(face)
        meta = _read_json(face_dir / "inversion.json")
        adjusted_path = face_dir / "hyperstyle_generator.safetensors"
        features_path = face_dir / "features.safetensors"
        if meta.get("key") == key and (face_dir / "latent.npy").is_file():
            generator = load_generator(adjusted_path, device=_device(self.generator)) if meta.get("adjusted") \
                else self.generator
            latent = next(iter(load_latents(face_dir / "latent.npy", generator.num_ws, generator.w_dim).values()))
            features = self._features(features_path) if meta.get("features") else None
            return torch.from_numpy(latent), generator, features, True
        inverse = np.asarray(face["record"]["inverse_transform"], np.float32)
        inversion = invert_faces([Face(face["aligned"], inverse)], self.settings.invert, self.encoder, self.generator,
                                 self.lpips_model)[0]
        latent = inversion.latents.to(torch.float32)
        save_npy(latent.numpy(), face_dir / "latent.npy")
        generator = self.generator
        if inversion.generator is not None:  # HyperStyle: this face's own weights
            generator = inversion.generator
            save_generator(generator, adjusted_path, {"note": "HyperStyle-adjusted generator of one face"})
        if inversion.features is not None:
            save_features(inversion.features, inversion.feature_layer, features_path,
                          {"encoder": str(self.settings.encoder), "network": str(self.settings.network)})
        write_json({"key": key, "adjusted": inversion.generator is not None,
                    "features": inversion.features is not None}, face_dir / "inversion.json")
        features = self._features(features_path) if inversion.features is not None else None
        return latent, generator, features, False

    def _features(self, path: Path):
        from ...models.encoders.sfe import read_features

        return read_features(path, self.generator) if self.settings.feature_edits else None

    def _tune(self, item: Item, index: int, face_dir: Path, face: dict, latent: torch.Tensor):
        from ..tune.pti import TuneTarget, tune_and_save

        settings = self.settings
        options = settings.pti.model_copy(update={"steps": settings.tune_steps})
        key = digest({"inversion": self._invert_key(face), "pti": options.record()})
        tune_dir = face_dir / f"tune_{key}"
        tuned = tune_dir / "tuned_generator.safetensors"
        if tuned.is_file() and (tune_dir / "tune.json").is_file():
            return load_generator(tuned, device=_device(self.generator)), True
        stylegan3 = self.generator.kind == "stylegan3"
        image = face["crop"] if stylegan3 else face["aligned"]
        transform = torch.from_numpy(np.asarray(face["record"]["inverse_transform"], np.float32)) if stylegan3 \
            else None
        target = TuneTarget(f"{item.name}_face{index}", generator_target(image, self.generator.img_resolution), latent, transform,
                            str(item.source))
        summary = tune_and_save(self.generator, [target], options, tune_dir, network=str(settings.network))
        if summary["status"] != "done":
            raise SgtoolError(f"{item.source}: tuning was interrupted; run again to resume it")
        return summary["generator"], False

    # --- rendering ------------------------------------------------------------------------------------

    def edited_photo(self, photo: np.ndarray, faces: list[PhotoFace], request: EditRequest,
                     regions: PhotoRegions | None = None):
        """(the photo with every face edited and pasted back, each face's edited render as uint8; with
        `regions`, None for the faces the region misses, which keep the photo's pixels)."""
        out, renders = photo, []
        for face in faces:
            ws = face.latent[None].to(_device(face.generator))
            if regions is not None:
                image = self._local_edit(face, ws, request, regions)
                if image is None:
                    renders.append(None)
                    continue
            elif face.features is not None:
                image = to_uint8(self._feature_edit(face, ws, request))[0]
            else:
                code = request.edit(face.generator, ws)
                image = to_uint8(render(face.generator, code, face.transform(), request.noise_mode))[0]
            out = paste(out, image, face.paste_quad(), *face.mask)
            renders.append(image)
        return out, renders

    def _local_edit(self, face: PhotoFace, ws: torch.Tensor, request: EditRequest, regions: PhotoRegions):
        """The face's render edited only inside the region (None when the region misses it)."""
        if face.features is not None:
            raise SgtoolError("--region and --scribble optimise the W+ code, which a feature-space inversion's "
                              "render is not: add --set feature_edits=false")
        target = regions.for_face(face.landmarks, face.paste_quad(), face.mask, int(face.generator.img_resolution))
        if target is None:
            return None
        latent = face_local_edit(face.generator, ws[0], target, request, self.settings, face.transform(),
                                 self.reporter, f"local edit of face {face.index}")
        return to_uint8(render(face.generator, latent[None], face.transform(), request.noise_mode))[0]

    def _feature_edit(self, face: PhotoFace, ws: torch.Tensor, request: EditRequest) -> torch.Tensor:
        """The face's edit carried through the SFE encoder's feature editor (its aligned render)."""
        from .features import feature_edit

        return feature_edit(self.encoder.model, face.generator, face.features, ws, request)[0]

    def write_edits(self, item: Item, photo: np.ndarray, faces: list[PhotoFace],
                    regions: PhotoRegions | None = None) -> tuple[list[str], list[dict]]:
        request, outdir = self.request, self.outdir
        suffix = photo_suffix(item.source)
        outputs: list[str] = []
        records = [{"face": face.index, "transform": face.record["inverse_transform"],
                    "latent": str(outdir / CACHE_DIR / item.name / f"face{face.index}" / "latent.npy")}
                   for face in faces]
        if request.edits or request.style_edits or request.texts is not None or self.settings.scribble is not None:
            edited, renders = self.edited_photo(photo, faces, request, regions)
            label = "scribble" if self.settings.scribble is not None else request.label
            base = outdir / f"{item.name}_{label}"
            outputs.append(str(self._save_photo(edited, f"{base}{suffix}")))
            outputs.append(str(save_image(np.concatenate([photo, edited], axis=1), f"{base}_side_by_side.png")))
            for face, image, record in zip(faces, renders, records):
                if image is None:  # the region misses this face: the photo's pixels are kept
                    record["untouched"] = True
                    continue
                before = save_image(face.crop, outdir / f"{item.name}_face{face.index}_before.png")
                after = save_image(image, outdir / f"{item.name}_face{face.index}_{label}.png")
                record.update(before=str(before), after=str(after))
                outputs += [str(before), str(after)]
        if request.sweep_strengths is not None:
            frames = [self.edited_photo(photo, faces, request.swept(s))[0] for s in request.sweep_strengths]
            labels = [f"{request.sweep_name}={s:g}" for s in request.sweep_strengths]
            small = [_shrunk(frame) for frame in frames]
            tag = sweep_tag(request)
            outputs.append(str(save_image(labelled_grid([small], labels), outdir / f"{item.name}_{tag}.png")))
            if self.settings.animate:
                outputs.append(str(write_animation(frames, outdir / f"{item.name}_{tag}.mp4", self.settings.fps)))
        return outputs, records

    def _save_photo(self, image: np.ndarray, path) -> Path:
        return save_image(image, path, quality=self.settings.jpeg_quality)


def _shrunk(image: np.ndarray) -> np.ndarray:
    if image.shape[1] <= GRID_WIDTH:
        return image
    height = max(1, round(image.shape[0] * GRID_WIDTH / image.shape[1]))
    return cv2.resize(image, (GRID_WIDTH, height), interpolation=cv2.INTER_AREA)


def _identity(ref) -> dict | str | None:
    if ref is None:
        return None
    path = Path(str(ref))
    return file_identity(path) if path.is_file() else str(ref)


def _device(generator) -> torch.device:
    return next(generator.parameters()).device


def _read_json(path: Path) -> dict:
    try:
        data = read_json(Path(path))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def edit_photos(photos: list[Path], settings: EditSettings, generator, encoder, request: EditRequest,
                shard=None, reporter: Reporter = SILENT) -> dict:
    """Edit every photo into OUTDIR (a batch: a photo that fails is recorded and the rest go on); returns the
    edits.json summary. OUTDIR/photo_edits.json remembers the photos and settings for later edits."""
    from ..invert.run import check_method, projection_lpips

    check_method(settings.invert.method, encoder)
    if getattr(encoder, "family", None) == "sfe" and generator.kind == "stylegan3":
        raise SgtoolError(f"{settings.encoder}: a feature-space inversion renders the aligned crop its features "
                          "belong to, and StyleGAN3 photo edits paste the unaligned render; edit the aligned faces "
                          "(sgtool align, invert, edit NAME_latent.npy) or use a W+ encoder here")
    lpips_model = projection_lpips(settings.invert, _device(generator)) \
        if settings.invert.method in ("optimize", "hybrid") else None
    editor = PhotoEditor(settings, generator, encoder, request, lpips_model, reporter)
    batch = Batch("edit", photos, settings.outdir, shard, reporter)
    report = batch.run(editor, label="editing photos")
    _remember(Path(settings.outdir), [str(p.resolve()) for p in photos], settings)
    summary = report.write("edits.json", settings.record(), network=str(settings.network),
                           direction_set=request.direction_set, **request.records(), grid=None, animations=[])
    return {**summary, "exit_code": report.exit_code}


def _remember(outdir: Path, photos: list[str], settings: EditSettings) -> None:
    earlier = _read_json(outdir / PHOTO_RECORD).get("photos", [])
    record = settings.record()
    write_json({"photos": list(dict.fromkeys([*earlier, *photos])),
                "settings": {key: record[key] for key in RECORDED if key in record}}, outdir / PHOTO_RECORD)
