"""`sgtool tune`: Pivotal Tuning Inversion, saving a tuned generator every command can load."""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..device import resolve_device
from ..errors import SgtoolError
from ..models import load_generator
from ..pipelines import tune as pti
from ..utils.batch import parse_shard, select_shard, shard_file_name, write_manifest
from ..utils.io import write_json
from .common import (ConfigOpt, DeviceOpt, JsonOpt, KernelsOpt, SetOpt, ShardOpt, console, emit_json, reports_errors,
                     setup)

_SETTING_KEYS = ("steps", "lr", "l2_weight", "lpips_weight", "lpips_threshold", "lpips_net", "random_lpips_backbone",
                 "locality", "locality_interval", "locality_alpha", "locality_psi", "locality_samples",
                 "locality_l2_weight", "locality_lpips_weight", "batch_size", "seed", "save_every", "noise_mode")


class _StopRequest:
    """First Ctrl-C: finish the current step, write a checkpoint, stop. Second Ctrl-C: stop at once."""

    def __init__(self):
        self.requested = False

    def __call__(self, step: int) -> bool:
        return self.requested

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum, frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            console.print("[yellow]stopping after this step (checkpoint); press Ctrl-C again to abort[/]")

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def _settings(cfg: dict) -> pti.TuneSettings:
    values = {key: cfg[key] for key in _SETTING_KEYS}
    activations = cfg.get("checkpoint_activations", "auto")
    values["checkpoint_activations"] = None if activations in (None, "auto") else bool(activations)
    try:
        for key in ("steps", "batch_size", "seed", "locality_interval", "locality_samples"):
            values[key] = int(values[key])
        for key in ("lr", "l2_weight", "lpips_weight", "lpips_threshold", "locality_alpha", "locality_psi",
                    "locality_l2_weight", "locality_lpips_weight"):
            values[key] = float(values[key])
        values["save_every"] = None if values["save_every"] in (None, 0) else int(values["save_every"])
    except (TypeError, ValueError) as exc:
        raise SgtoolError(f"tune: a numeric setting has a non-numeric value ({exc})") from None
    return pti.TuneSettings(**values)


@reports_errors
def tune(
    inputs: Annotated[Path, typer.Argument(help="An image, or a folder of images (frames) to tune on.")],
    network: Annotated[Optional[str], typer.Option("--network", "-n", help="Generator the latents belong to.")] = None,
    latents: Annotated[Optional[Path], typer.Option("--latents", help="Pivot latents from `sgtool invert` "
                                                    "(NAME_latent.npy, latents.npy dict, or their folder).")] = None,
    transforms: Annotated[Optional[Path], typer.Option("--transforms", help="alignment.json or landmarks-transforms "
                                                       ".npy: tune on unaligned crops (StyleGAN3).")] = None,
    outdir: Annotated[Optional[Path], typer.Option("--outdir", "-o", help="Output directory.")] = None,
    joint: Annotated[Optional[bool], typer.Option("--joint/--separate", help="One generator for all images "
                                                  "(video frames) or one per image.")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Maximum tuning steps.")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Adam learning rate.")] = None,
    l2_weight: Annotated[Optional[float], typer.Option("--l2-weight", help="Weight of the MSE term.")] = None,
    lpips_threshold: Annotated[Optional[float], typer.Option("--lpips-threshold",
                                                             help="Stop early below this LPIPS.")] = None,
    locality: Annotated[Optional[bool], typer.Option("--locality/--no-locality",
                                                     help="PTI's locality regulariser.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per step (--joint).")] = None,
    save_every: Annotated[Optional[int], typer.Option("--save-every", help="Checkpoint every N steps.")] = None,
    resume: Annotated[Optional[bool], typer.Option("--resume/--no-resume", help="Continue from outdir's checkpoint "
                                                   "(default: when one exists).")] = None,
    export_pkl: Annotated[Optional[bool], typer.Option("--export-pkl/--no-export-pkl", help="Also write NVIDIA's "
                                                       "pickle layout.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed for batch order and locality latents.")] = None,
    method: Annotated[Optional[str], typer.Option("--method", help="Inversion when --latents is absent.")] = None,
    encoder: Annotated[Optional[Path], typer.Option("--encoder", help="Encoder checkpoint for that inversion.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    shard: ShardOpt = None,
    device: DeviceOpt = None,
    kernels: KernelsOpt = None,
    json_out: JsonOpt = False,
):
    """Pivotal Tuning Inversion: tune the generator so the pivot latents reproduce the photos exactly."""
    ctx = setup("tune", config, set_, json_out, device, kernels)
    cfg = ctx.config
    ctx.override((("network", network), ("latents", latents), ("transforms", transforms), ("outdir", outdir),
                  ("joint", joint), ("steps", steps), ("lr", lr), ("l2_weight", l2_weight),
                  ("lpips_threshold", lpips_threshold), ("locality", locality), ("batch_size", batch_size),
                  ("save_every", save_every), ("resume", resume), ("export_pkl", export_pkl), ("seed", seed),
                  ("method", method), ("encoder", encoder)))
    settings = _settings(cfg)
    shard_spec = parse_shard(shard)
    if shard_spec is not None and (cfg["joint"] or not Path(inputs).is_dir()):
        raise SgtoolError("--shard splits a folder tuned image by image; a joint run or a single image is one job")
    all_images = pti.collect_images(inputs)
    images = select_shard(all_images, shard_spec)
    if not images:
        raise SgtoolError(f"shard {shard} of {inputs} holds no image; use fewer shards")
    torch_device = resolve_device(cfg["device"])
    inverter = None
    if cfg["network"]:
        generator = load_generator(cfg["network"], device=torch_device)
    elif not cfg["latents"] and cfg["encoder"] and cfg["method"] != "optimize":
        # Inverting with an encoder: its checkpoint's decoder is the generator to tune.
        from ..pipelines.invert import load_encoder

        inverter = load_encoder(cfg["encoder"], torch_device)
        generator = inverter.generator.eval().requires_grad_(False)
        cfg["network"] = f"{cfg['encoder']} (decoder)"
    else:
        raise SgtoolError("--network is required: the generator the latents were inverted with (or --encoder, "
                          "whose decoder is tuned, when inverting here)")
    transform_table = pti.read_transforms(cfg["transforms"]) if cfg["transforms"] else None
    from ..losses import load_lpips

    with torch.random.fork_rng(devices=[]):
        # A random (test) backbone must be the same network when an interrupted run resumes.
        torch.manual_seed(settings.seed)
        lpips_model = load_lpips(settings.lpips_net, torch_device, random_backbone=settings.random_lpips_backbone)
    if cfg["latents"]:
        latent_table = pti.read_latents(cfg["latents"], generator.num_ws, generator.w_dim)
    else:
        if not ctx.json:
            console.print(f"no --latents: inverting {len(images)} image(s) first (--method {cfg['method']})")
        projection_lpips = None if cfg["method"] == "encoder" else load_lpips(
            "vgg", torch_device, random_backbone=settings.random_lpips_backbone)
        latent_table = pti.invert_for_tuning(
            images, generator, cfg["method"], encoder=inverter if inverter is not None else cfg["encoder"],
            encoder_steps=int(cfg["encoder_steps"]),
            project_steps=int(cfg["project_steps"]), transforms=transform_table, seed=settings.seed,
            device=torch_device, lpips_model=projection_lpips)
    targets, failures = pti.match_targets(images, latent_table, generator.img_resolution, transform_table)
    for failure in failures:
        console.print(f"[red]skipped[/] {failure['source']}: {failure['error']}", highlight=False)
    if not targets:
        raise SgtoolError(f"no usable image in {inputs}: {failures[0]['error']}")
    out = Path(cfg["outdir"])
    # A folder tuned image by image gets one subfolder per image; a single image or a joint run, outdir itself.
    per_image = not cfg["joint"] and Path(inputs).is_dir()
    groups = [(out / t.name, [t]) for t in targets] if per_image else [(out, targets)]
    extra = {"inputs": str(inputs), "latents": str(cfg["latents"]), "transforms": cfg["transforms"],
             "joint": bool(cfg["joint"]), "device": str(torch_device), "kernels": cfg.get("kernels")}
    runs = []
    stop = _StopRequest()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
               TimeRemainingColumn())
    with stop.installed(), Progress(*columns, console=console, transient=True, disable=ctx.json) as progress:
        for run_dir, run_targets in groups:
            label = "joint" if len(run_targets) > 1 else run_targets[0].name
            task = progress.add_task(f"tuning {label}", total=settings.steps, loss="")

            def on_step(record, task=task):
                progress.update(task, completed=record["step"],
                                loss=f"lpips {record['lpips']:.4f} mse {record['mse']:.5f}")

            try:
                summary = pti.tune_and_save(generator, run_targets, settings, run_dir, network=str(cfg["network"]),
                                            export_pkl=bool(cfg["export_pkl"]), resume=cfg["resume"],
                                            lpips_model=lpips_model, device=torch_device, should_stop=stop,
                                            on_step=on_step, extra_config=extra,
                                            report_extra=None if per_image else {"failures": failures})
            except SgtoolError as exc:
                if not per_image:
                    raise
                failures.append({"source": run_targets[0].source, "error": str(exc)})
                console.print(f"[red]failed[/] {run_targets[0].source}: {exc}", highlight=False)
                continue
            summary.pop("generator", None)
            runs.append(summary)
            progress.remove_task(task)
            if summary["status"] == "interrupted":
                break
    interrupted = any(r["status"] == "interrupted" for r in runs)
    if per_image:
        report = {"outdir": str(out), "runs": runs, "failures": failures,
                  "config": {**cfg, **extra, "outdir": str(out)}}
        write_json(report, out / shard_file_name("tune.json", shard_spec))
        if shard_spec is not None:
            bad = {str(f["source"]): f["error"] for f in failures}
            items = [{"input": str(p), "status": "failed", "error": bad[str(p)]} if str(p) in bad
                     else {"input": str(p), "status": "ok"} for p in images]
            report["manifest"] = str(write_manifest(out, "tune", shard_spec, items, inputs_total=len(all_images),
                                                    summary_file="tune.json"))
    else:
        report = runs[0]
    if ctx.json:
        emit_json(report)
    for run in runs:
        if run["status"] == "interrupted":
            console.print(f"[yellow]interrupted after step {run['steps_done']}[/]; checkpoint {run['checkpoint']}: "
                          "run the same command again to resume")
        elif not ctx.json:
            after, before = run["mean_after"], run["mean_before"]
            console.print(f"{run['outdir']}: {run['steps_done']} steps, LPIPS {before['lpips']:.4f} -> "
                          f"{after['lpips']:.4f}, MSE {before['mse']:.5f} -> {after['mse']:.5f}; "
                          f"generator {run['outputs']['generator']}", highlight=False)
    if interrupted:
        raise typer.Exit(130)
    if failures:
        raise typer.Exit(1)
