"""Input files -> pSp translations: the W+ code, the translation, style-mixed variants and a side-by-side.

Library use:

    translator = load_translator("psp_celebs_sketch_to_face.pt")  # sgtool.models.encoders.psp_tasks
    prepared = prepare_input(Path("sketch.png"), translator.task)
    codes = translator.encode(prepared.x[None])            # W+ [1, 18, 512]
    image = translator.render(codes)                       # [1, 3, 1024, 1024] in [-1, 1]
    summary = translate_batch(["sketches/"], TranslateSettings(encoder="psp_celebs_sketch_to_face.pt"))

Per input NAME: NAME_latent.npy (the code the decoder renders, as `sgtool invert` writes it), NAME_translation.png,
with --outputs N also NAME_mix1..N.png and NAME_mix_latents.npy [N, num_ws, w_dim], and NAME_side_by_side.png
(the input as the model sees it | the translation | the mixes). The run's record is translate.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ...device import resolve_device
from ...errors import SgtoolError
from ...models.encoders.psp_tasks import (PspTask, PspTranslator, build_translator, mix_codes, read_task_checkpoint,
                                          style_rows)
from ...progress import SILENT, Reporter
from ...settings import TranslateSettings
from ...utils.batch import Shard
from ...utils.io import save_image, save_npy, to_uint8
from ..shared.batch import Batch, Item, collect, earlier_items
from ..shared.images import ENCODER_SIZE
from .inputs import Prepared, prepare_input, read_palette

# Settings that change what is written beside the outputs, not the outputs: runs differing only in these add up.
OUTPUT_ONLY_SETTINGS = ("outdir", "device", "kernels", "batch_size")


def default_mix_layers(num_ws: int) -> list[int]:
    """The fine W+ rows pSp's README mixes: 8-17 of 18 (1024 px); the same share of a smaller generator's."""
    return list(range(num_ws * 4 // 9, num_ws))


@dataclass
class MixPlan:
    """What every input's style mixing uses: the injected codes and the noise maps, drawn once from the seed."""

    layers: list[int]
    alpha: float | None
    inject: torch.Tensor  # [N, num_ws, w_dim]
    noise: list[torch.Tensor]  # per noise layer [N, 1, r, r]
    z: np.ndarray  # [N, z_dim]


def mix_layers(settings: TranslateSettings, num_ws: int, source: str) -> list[int] | None:
    """The W+ rows the mixes replace (None without --outputs), each checked against the encoder's rows."""
    if settings.outputs == 0:
        return None
    layers = settings.mix_layers if settings.mix_layers is not None else default_mix_layers(num_ws)
    beyond = [i for i in layers if i >= num_ws]
    if beyond:
        raise SgtoolError(f"--mix-layers {','.join(map(str, beyond))}: {source} has W+ rows 0-{num_ws - 1}")
    return layers


def plan_mixing(translator: PspTranslator, settings: TranslateSettings, layers: list[int]) -> MixPlan:
    """The injected codes: z from numpy's RandomState(seed) (`np.random.seed(S)` then `randn(N, 512)` in pSp's
    style_mixing.py), mapped without truncation; noise maps from a torch generator seeded the same."""
    z_dim = int(getattr(translator.generator, "z_dim", 512))
    z = np.random.RandomState(settings.seed).randn(settings.outputs, z_dim).astype(np.float32)
    gen = torch.Generator().manual_seed(settings.seed)
    noise = [torch.randn((settings.outputs, 1, *shape), generator=gen) for shape in translator.noise_shapes()]
    return MixPlan(layers, settings.mix_alpha, translator.inject_codes(torch.from_numpy(z)), noise, z)


def check_task_settings(task: PspTask, settings: TranslateSettings, source: str) -> int | None:
    """The factor a super-resolution run degrades with; options that do not fit the task are refused."""
    if settings.palette is not None and task.kind != "segmentation":
        raise SgtoolError(f"--palette is for segmentation checkpoints; {source} is a {task.kind} model")
    if task.kind != "super-resolution":
        if settings.factor is not None:
            raise SgtoolError(f"--factor is for super-resolution checkpoints; {source} is a {task.kind} model")
        return None
    if settings.factor is not None:
        return settings.factor
    if len(task.factors) == 1:
        return task.factors[0]
    raise SgtoolError(f"{source} was trained on downsampling factors {','.join(map(str, task.factors))}; pass "
                      "--factor F (one of them: how much to downsample the input before restoring it)")


def translate_batch(paths, settings: TranslateSettings, shard: Shard | None = None, reporter: Reporter = SILENT,
                    translator: PspTranslator | None = None) -> dict:
    """Translate image files/folders/globs into `settings.outdir`; returns the translate.json summary.

    The checkpoint's task and every option are checked first and the inputs prepared before the networks are
    built, so a bad input or option costs no model load. `translator`: an already loaded one.
    """
    if translator is not None:
        task, num_ws, source = translator.task, translator.num_ws, translator.source
    elif not settings.encoder:
        raise SgtoolError("translate needs --encoder (-e): a pSp task checkpoint such as "
                          "psp_celebs_sketch_to_face.pt or a registry name (`sgtool models list`)")
    else:
        ckpt, task = read_task_checkpoint(settings.encoder)
        num_ws, source = style_rows(ckpt), str(ckpt.path)
    factor = check_task_settings(task, settings, source)
    layers = mix_layers(settings, num_ws, source)
    palette = read_palette(settings.palette) if settings.palette is not None else None
    outdir = Path(settings.outdir)
    batch = Batch("translate", collect(paths), outdir, shard, reporter)
    record = {**settings.record(), "task": task.kind, "dataset_type": task.dataset_type, "factor": factor,
              "mix_layers": layers}
    earlier = earlier_items(outdir / batch.file_name("translate.json"), record, batch.all_items,
                            ignored=OUTPUT_ONLY_SETTINGS)
    models: dict = {"translator": translator}

    def loaded() -> tuple[PspTranslator, MixPlan | None]:
        if models["translator"] is None:
            models["translator"] = build_translator(ckpt, device=resolve_device(settings.device),
                                                    network=settings.network)
        if "plan" not in models:
            models["plan"] = plan_mixing(models["translator"], settings, layers) if layers is not None else None
        return models["translator"], models["plan"]

    def prepare(item: Item) -> Prepared:
        return prepare_input(item.source, task, factor=factor, palette=palette)

    def process(chunk: list[tuple[Item, Prepared]]) -> list[dict]:
        model, plan = loaded()
        codes = model.encode(torch.stack([prepared.x for _, prepared in chunk]))
        images = model.render(codes, resize=settings.resize_outputs)
        return [_write_outputs(item, prepared, codes[i], images[i], model, plan, settings, outdir)
                for i, (item, prepared) in enumerate(chunk)]

    report = batch.run_chunks(prepare, process, settings.batch_size)
    return {**report.write("translate.json", record, earlier), "exit_code": report.exit_code}


def _write_outputs(item: Item, prepared: Prepared, codes: torch.Tensor, image: torch.Tensor,
                   translator: PspTranslator, plan: MixPlan | None, settings: TranslateSettings,
                   outdir: Path) -> dict:
    name = item.name
    latent = save_npy(codes.detach().cpu().to(torch.float32).numpy(), outdir / f"{name}_latent.npy")
    translation = save_image(image, outdir / f"{name}_translation.png")
    record: dict = {"latent": str(latent), "translation": str(translation)}
    outputs = [latent, translation]
    tiles = [_tile(prepared.preview), _tile(to_uint8(image))]
    if plan is not None:
        mixed = mix_codes(codes[None].expand(len(plan.z), -1, -1), plan.inject, plan.layers, plan.alpha)
        renders = translator.render(mixed, noise=plan.noise, resize=settings.resize_outputs)
        outputs.append(save_npy(mixed.detach().cpu().numpy().astype(np.float32), outdir / f"{name}_mix_latents.npy"))
        record["mix_latents"] = str(outputs[-1])
        mixes = [save_image(render, outdir / f"{name}_mix{k}.png") for k, render in enumerate(renders, 1)]
        outputs += mixes
        record["mixes"] = [str(p) for p in mixes]
        tiles += [_tile(rgb) for rgb in to_uint8(renders)]
    outputs.append(save_image(np.concatenate(tiles, axis=1), outdir / f"{name}_side_by_side.png"))
    record["side_by_side"] = str(outputs[-1])
    if prepared.factor is not None:
        record["factor"] = prepared.factor
    return {"outputs": [str(p) for p in outputs], **record}


def _tile(rgb: np.ndarray) -> np.ndarray:
    """A 256 px tile of the side-by-side (PIL bilinear, as pSp's figures resize them)."""
    if rgb.shape[:2] == (ENCODER_SIZE, ENCODER_SIZE):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((ENCODER_SIZE, ENCODER_SIZE), Image.Resampling.BILINEAR))
