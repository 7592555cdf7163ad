"""`sgtool invert`: photos -> W+ latents with a ReStyle encoder, optimisation, or both."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..device import resolve_device
from ..errors import SgtoolError
from ..hub import is_registry_reference, resolve_checkpoint
from ..utils.batch import parse_shard, shard_file_name, write_manifest
from .common import (ConfigOpt, DeviceOpt, JsonOpt, KernelsOpt, SetOpt, ShardOpt, console, emit_json, reports_errors,
                     setup)

_SETTING_KEYS = ("method", "steps", "space", "num_steps", "l2_weight", "seed", "batch_size", "align", "align_recipe",
                 "skip_existing", "save_steps", "save_video", "video_fps", "metrics", "metrics_lpips_net", "id_model",
                 "lpips_random_backbone", "projector")


@reports_errors
def invert(
    paths: Annotated[list[str], typer.Argument(help="Image files, directories or globs (quote globs).")],
    method: Annotated[Optional[str], typer.Option("--method", "-m", help="encoder, optimize, hybrid or hyperstyle.")] = None,
    encoder: Annotated[Optional[Path], typer.Option("--encoder", "-e", help="Encoder checkpoint (.pt): ReStyle, pSp, e4e or HyperStyle.")] = None,
    network: Annotated[Optional[str], typer.Option("--network", "-n", help="Generator (default: the encoder's decoder).")] = None,
    w_encoder: Annotated[Optional[Path], typer.Option("--w-encoder", help="HyperStyle's W encoder (.pt; default: "
                                                      "the file named in the checkpoint's options).")] = None,
    outdir: Annotated[Optional[Path], typer.Option("--outdir", "-o", help="Output directory.")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Encoder refinement steps.")] = None,
    space: Annotated[Optional[str], typer.Option("--space", help="w or w+ (optimize/hybrid).")] = None,
    num_steps: Annotated[Optional[int], typer.Option("--num-steps", help="Optimisation steps.")] = None,
    l2_weight: Annotated[Optional[float], typer.Option("--l2-weight", help="Pixel MSE weight added to LPIPS.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Projection noise seed.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per encoder pass.")] = None,
    skip_existing: Annotated[Optional[bool], typer.Option("--skip-existing/--no-skip-existing",
                                                          help="Skip images already inverted in OUTDIR.")] = None,
    save_steps: Annotated[Optional[bool], typer.Option("--save-steps/--no-save-steps",
                                                       help="Write NAME_steps.png.")] = None,
    save_video: Annotated[Optional[bool], typer.Option("--save-video/--no-save-video",
                                                       help="Write the optimisation as NAME_projection.mp4.")] = None,
    metrics: Annotated[Optional[bool], typer.Option("--metrics/--no-metrics",
                                                    help="Write metrics.json and print a table.")] = None,
    id_model: Annotated[Optional[Path], typer.Option("--id-model", help="ArcFace IR-SE50 weights for identity "
                                                     "similarity (model_ir_se50.pth).")] = None,
    align: Annotated[Optional[bool], typer.Option("--align/--no-align", help="Align raw photos first.")] = None,
    shard: ShardOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    kernels: KernelsOpt = None,
    json_out: JsonOpt = False,
):
    """Invert photos into W+ latents (ReStyle encoder, projection, or hybrid)."""
    ctx = setup("invert", config, set_, json_out, device, kernels)
    cfg = ctx.config
    ctx.override((("method", method), ("encoder", encoder), ("network", network), ("w_encoder", w_encoder),
                  ("outdir", outdir),
                  ("steps", steps), ("space", space), ("num_steps", num_steps), ("l2_weight", l2_weight),
                  ("seed", seed), ("batch_size", batch_size), ("skip_existing", skip_existing),
                  ("save_steps", save_steps), ("save_video", save_video), ("metrics", metrics),
                  ("id_model", id_model), ("align", align)))

    from ..pipelines.invert import invert_images, load_encoder

    if cfg.get("id_model") and is_registry_reference(cfg["id_model"]):  # e.g. arcface-ir-se50
        cfg["id_model"] = str(resolve_checkpoint(cfg["id_model"], kind="backbone"))
    shard_spec = parse_shard(shard)
    settings = _settings(cfg)
    settings.check()
    if settings.id_model and not Path(settings.id_model).is_file():
        raise SgtoolError(f"--id-model {settings.id_model} does not exist; download model_ir_se50.pth (the ArcFace "
                          "IR-SE50 released with pSp/e4e) and pass its path")
    torch_device = resolve_device(cfg["device"])
    enc = G = None
    if cfg.get("encoder"):
        enc = load_encoder(cfg["encoder"], device=torch_device, network=cfg.get("network"),
                           w_encoder=cfg.get("w_encoder"))
        G = enc.generator
    elif settings.method != "optimize":
        raise SgtoolError(f"--method {settings.method} needs --encoder FILE.pt (a ReStyle-pSp/e4e checkpoint)")
    elif cfg.get("network"):
        from ..models import load_generator

        G = load_generator(cfg["network"], device=torch_device)
    else:
        raise SgtoolError("--method optimize needs --network FILE (the generator to project into)")
    out = Path(cfg["outdir"])

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.fields[info]}"), console=console, transient=True, disable=ctx.json) as progress:
        images_task = progress.add_task("inverting", total=None, info="")
        steps_task = progress.add_task("optimising", total=settings.num_steps, info="",
                                       visible=settings.method in ("optimize", "hybrid"))

        def on_image(name, done, total):
            progress.update(images_task, completed=done, total=total, info=name)

        def on_step(name, step):
            progress.update(steps_task, completed=step.step, total=step.num_steps, info=f"loss {step.loss:.4f}")

        report = invert_images(paths, out, settings, encoder=enc, generator=G, device=torch_device,
                               on_image=on_image, on_step=on_step, extra_config={"kernels": cfg.get("kernels")},
                               shard=shard_spec)

    summary = {"outdir": str(out), "images": report.records, "failed": report.failed, "skipped": report.skipped,
               "latents": str(report.latents_file) if report.latents_file else None, "metrics": report.metrics,
               "config": report.config}
    if shard_spec is not None:
        summary["manifest"] = str(_write_shard_manifest(paths, out, shard_spec, report))
    if ctx.json:
        emit_json(summary)
    else:
        for item in report.failed:
            console.print(f"[red]failed[/] {item['source']}: {item['error']}", highlight=False)
        if settings.metrics and report.records:
            console.print(_metrics_table(report))
        console.print(f"inverted {len(report.records)} image(s) into {out}/ "
                      f"({len(report.skipped)} skipped, {len(report.failed)} failed; settings in "
                      f"{out / shard_file_name('invert.json', shard_spec)})")
    if report.failed:
        raise typer.Exit(1)


def _write_shard_manifest(paths, out: Path, shard, report):
    """Per-input status of this shard for `sgtool merge-manifests` (skipped inputs were done before: ok)."""
    from ..pipelines.align import expand_inputs
    from ..utils.batch import select_shard

    sources = expand_inputs(paths)
    failed = {item["source"]: item["error"] for item in report.failed}
    outputs = {r["source"]: [r[k] for k in ("latent", "recon", "recon_unaligned", "generator") if r.get(k)]
               for r in report.records}
    items = [{"input": str(src), "status": "failed", "error": failed[str(src)]} if str(src) in failed
             else {"input": str(src), "status": "ok", "outputs": outputs.get(str(src), [])}
             for src in select_shard(sources, shard)]
    return write_manifest(out, "invert", shard, items, inputs_total=len(sources), summary_file="invert.json")


def _settings(cfg: dict):
    from ..pipelines.invert import InvertSettings

    values = {key: cfg[key] for key in _SETTING_KEYS if key in cfg}
    try:
        for key in ("num_steps", "seed", "batch_size", "video_fps"):
            values[key] = int(values[key])
        values["steps"] = None if values.get("steps") is None else int(values["steps"])
        values["l2_weight"] = float(values["l2_weight"])
        values["projector"] = {k: float(v) for k, v in (values.get("projector") or {}).items() if v is not None}
        values["projector"]["w_avg_samples"] = int(values["projector"].get("w_avg_samples", 10000))
    except (TypeError, ValueError) as exc:
        raise SgtoolError(f"invert: a numeric setting has a non-numeric value ({exc})") from None
    values["id_model"] = str(values["id_model"]) if values.get("id_model") else None
    for key in ("align", "skip_existing", "save_steps", "save_video", "metrics", "lpips_random_backbone"):
        values[key] = bool(values[key])
    return InvertSettings(**values)


def _metrics_table(report) -> Table:
    keys = [k for k in ("mse", "psnr", "lpips", "ms_ssim", "id_similarity", "seconds")
            if any(k in r.get("metrics", {}) for r in report.records)]
    table = Table(title="reconstruction metrics")
    table.add_column("image")
    for key in keys:
        table.add_column(key, justify="right")
    for record in report.records:
        m = record.get("metrics", {})
        table.add_row(record["name"], *[f"{m[k]:.4f}" if k in m else "-" for k in keys])
    if report.metrics:
        table.add_row("[bold]mean[/]", *[f"{report.metrics[k]:.4f}" if k in report.metrics else "-" for k in keys])
    return table
