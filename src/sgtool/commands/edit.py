"""`sgtool edit`: semantic edits of inverted latents, sweeps, SeFa discovery and boundary training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import torch
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from ..device import resolve_device
from ..editing.directions import DirectionRegistry, generator_hint, parse_sweep
from ..errors import SgtoolError
from ..latents import load_latents
from ..models import load_generator
from ..pipelines.edit import (
    discover_sefa,
    load_transforms,
    prepare_request,
    run_edits,
    train_boundary_from_csv,
)
from ..pipelines.generate import seed_to_z
from ..utils.batch import parse_shard, select_shard, shard_file_name, write_manifest
from ..utils.io import write_json
from ..utils.parsing import parse_int_list
from .common import (ConfigOpt, DeviceOpt, JsonOpt, KernelsOpt, SetOpt, ShardOpt, console, emit_json, reports_errors,
                     setup)

ListOpt = Optional[list[str]]


@reports_errors
def edit(
    latents: Annotated[Optional[list[Path]], typer.Argument(
        help="NAME_latent.npy files or stylegan3-editing latents.npy dicts.", show_default=False)] = None,
    network: Annotated[Optional[str], typer.Option("--network", "-n", help="Generator the latents belong to.")] = None,
    edits: Annotated[ListOpt, typer.Option("--edit", "-e", help="NAME=STRENGTH, e.g. age=+2 (repeatable).")] = None,
    directions: Annotated[ListOpt, typer.Option("--direction", help="Add a direction: NAME=FILE.npy (repeatable).")] = None,
    styles: Annotated[ListOpt, typer.Option("--style", help="StyleSpace edit LAYER:CHANNEL=STRENGTH (repeatable).")] = None,
    layers: Annotated[Optional[str], typer.Option("--layers", help="Style inputs a W edit touches, e.g. 0-5.")] = None,
    mode: Annotated[Optional[str], typer.Option("--mode", help="auto, w or wplus (direction shape).")] = None,
    sweep: Annotated[Optional[str], typer.Option("--sweep", help="NAME=START:STOP:COUNT grid, e.g. age=-4:4:9.")] = None,
    animate: Annotated[Optional[bool], typer.Option("--animate/--no-animate", help="With --sweep: write mp4s.")] = None,
    fps: Annotated[Optional[float], typer.Option("--fps", help="Frames per second of --animate.")] = None,
    transforms: Annotated[Optional[Path], typer.Option("--transforms", help="Landmarks transforms (.npy dict or "
                                                       "alignment.json): render unaligned.")] = None,
    aligned: Annotated[Optional[bool], typer.Option("--aligned/--unaligned", help="Ignore transforms.")] = None,
    discover: Annotated[Optional[str], typer.Option("--discover", help="Find directions without labels: sefa.")] = None,
    top: Annotated[Optional[int], typer.Option("--top", help="How many SeFa directions.")] = None,
    train_boundary: Annotated[Optional[Path], typer.Option("--train-boundary", help="CSV of latent,score: train "
                                                           "an InterFaceGAN boundary.")] = None,
    step: Annotated[Optional[int], typer.Option("--step", help="Step of a multi-step latents dict (-1 = last).")] = None,
    outdir: Annotated[Optional[Path], typer.Option("--outdir", "-o", help="Output directory.")] = None,
    shard: ShardOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    kernels: KernelsOpt = None,
    json_out: JsonOpt = False,
):
    """Edit inverted latents (InterFaceGAN directions, StyleSpace channels), sweep strengths, discover
    SeFa directions or train a boundary."""
    ctx = setup("edit", config, set_, json_out, device, kernels)
    cfg = ctx.config
    ctx.override((("network", network), ("layers", layers), ("mode", mode), ("animate", animate),
                  ("fps", fps), ("transforms", transforms), ("aligned", aligned), ("top", top),
                  ("step", step), ("outdir", outdir)))
    out = Path(cfg["outdir"])
    actions = [name for name, given in (("--train-boundary", train_boundary), ("--discover", discover),
                                        ("--edit/--style/--sweep", edits or styles or sweep)) if given]
    if len(actions) > 1:
        raise SgtoolError(f"{' and '.join(actions)} are separate tasks; run them one at a time")
    if not actions:
        raise SgtoolError("nothing to do: give --edit NAME=STRENGTH, --style, --sweep, --discover sefa or "
                          "--train-boundary scores.csv")

    if train_boundary is not None:
        summary = train_boundary_from_csv(
            train_boundary, out, cfg["boundary_name"], ratio=float(cfg["boundary_ratio"]),
            split=float(cfg["boundary_split"]), seed=int(cfg["boundary_seed"]), space=str(cfg["boundary_space"]))
        write_json({**summary, "config": cfg}, out / f"{summary['name']}_boundary.json")
        _report(ctx, summary, f"held-out accuracy {_pct(summary['val_accuracy'])} "
                              f"({2 * summary['val_per_class']} samples; in-between samples "
                              f"{_pct(summary['remaining_accuracy'])}); wrote {summary['boundary']}")
        return

    if discover is None:
        # Before any generator or direction is loaded (possibly downloaded) for nothing.
        if not latents:
            raise SgtoolError("give the latent files to edit: sgtool edit out/invert/*_latent.npy --edit age=+2")
        if not any(p.exists() for p in latents):
            raise SgtoolError(f"{latents[0]}: no such latent file; give the NAME_latent.npy files (or latents.npy "
                              "dict) that sgtool invert wrote")
    layer_list = _layers(cfg["layers"])
    torch_device = resolve_device(cfg["device"])
    generator = load_generator(cfg["network"], device=torch_device)
    if getattr(generator, "is_test_model", False):
        console.print(f"[yellow]{cfg['network']} is a built-in random-weight TEST model: edits will not mean "
                      "anything. Pass --network with the generator your latents came from.[/]")

    if discover is not None:
        if discover != "sefa":
            raise SgtoolError(f"--discover knows 'sefa', got {discover!r}")
        preview_ws, name = _preview_latent(generator, latents, cfg, torch_device)
        strengths = _preview_strengths(cfg["sefa_preview"])
        summary = discover_sefa(generator, out, int(cfg["top"]), layer_list, preview_ws, strengths,
                                noise_mode=str(cfg["noise_mode"]))
        summary.update(network=str(cfg["network"]), preview_latent=name, config=cfg)
        write_json(summary, out / "sefa.json")
        _report(ctx, summary, f"wrote {len(summary['directions'])} SeFa directions to {out}/ (sefa_00.npy is the "
                              f"strongest; preview {summary['preview']}); use one with --direction NAME=FILE")
        return

    shard_spec = parse_shard(shard)
    if shard_spec is not None and sweep:
        raise SgtoolError("--sweep draws one grid of every input; run sweeps without --shard")
    all_latents, latents = latents, select_shard(latents, shard_spec)
    summary_name = shard_file_name("edits.json", shard_spec)
    registry = DirectionRegistry.from_config(cfg)
    extra = [f"{k}={v}" for k, v in (cfg.get("extra_directions") or {}).items()] + list(directions or [])
    hint = generator_hint(cfg["network"], generator)
    request = prepare_request(generator, registry, edits or [], styles or [], extra, sweep, layer_list,
                              str(cfg["mode"]), str(cfg["style_units"]), int(cfg["style_std_samples"]),
                              str(cfg["noise_mode"]), hint)
    known = None
    if cfg["transforms"] and not cfg["aligned"]:
        known = load_transforms(cfg["transforms"])
        if generator.kind != "stylegan3":
            raise SgtoolError("--transforms needs a StyleGAN3 network (StyleGAN2 has no input transform); "
                              "drop --transforms or pass --aligned")
    with Progress(TextColumn("editing"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  console=console, transient=True, disable=ctx.json) as progress:
        task = progress.add_task("", total=None)
        outcome = run_edits(generator, latents, request, out, known, use_invert_records=True,
                            aligned=bool(cfg["aligned"]), step=int(cfg["step"]), animate=bool(cfg["animate"]),
                            fps=float(cfg["fps"]), batch_size=int(cfg["batch_size"]),
                            on_item=lambda label: progress.update(task, advance=1, description=label))
    summary = {"network": str(cfg["network"]), "direction_set": registry.set_for(generator, hint),
               "config": {**cfg, "outdir": str(out), "edits": edits or [], "styles": styles or [],
                          "directions_given": extra, "sweep": sweep, "latents": [str(p) for p in all_latents]},
               "items": outcome.items, "failures": outcome.failures, "grid": outcome.grid,
               "animations": outcome.animations}
    write_json(summary, out / summary_name)
    if shard_spec is not None:
        summary["manifest"] = str(write_manifest(out, "edit", shard_spec, _manifest_items(latents, outcome),
                                                 inputs_total=len(all_latents), summary_file="edits.json"))
    for failure in outcome.failures:
        console.print(f"[red]failed:[/] {failure['error']}", highlight=False, soft_wrap=True)
    if ctx.json:
        emit_json(summary)
    else:
        extra_out = f", grid {outcome.grid}" if outcome.grid else ""
        console.print(f"edited {len(outcome.items)} latent(s) into {out}/{extra_out} (record: {out / summary_name})")
    if outcome.failures:
        raise typer.Exit(1)


def _manifest_items(latents, outcome) -> list[dict]:
    """One manifest record per latent file: failed if any of its entries failed."""
    errors: dict[str, list[str]] = {}
    for failure in outcome.failures:
        errors.setdefault(failure["input"], []).append(failure["error"])
    outputs: dict[str, list[str]] = {}
    for item in outcome.items:
        outputs.setdefault(item["input"], []).extend(
            item[k] for k in ("image", "latent", "styles", "animation") if item.get(k))
    return [{"input": str(p), "status": "failed", "error": "; ".join(errors[str(p)])} if str(p) in errors
            else {"input": str(p), "status": "ok", "outputs": outputs.get(str(p), [])} for p in latents]


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _report(ctx, summary: dict, message: str) -> None:
    if ctx.json:
        emit_json(summary)
    else:
        console.print(message, highlight=False, soft_wrap=True)


def _preview_strengths(value) -> np.ndarray:
    # A list, or "START:STOP:COUNT" (YAML would read an unquoted -3:3:3 as a base-60 number).
    if isinstance(value, (list, tuple)) and len(value) == 3:
        value = ":".join(str(v) for v in value)
    if not isinstance(value, str):
        raise SgtoolError(f"sefa_preview must be [START, STOP, COUNT], got {value!r}")
    return parse_sweep(f"sefa_preview={value}")[1]


def _layers(value) -> list[int] | None:
    if value is None or value == "" or value == "all":
        return None
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return parse_int_list(str(value), "--layers index")


def _preview_latent(generator, latents, cfg, device) -> tuple[torch.Tensor, str]:
    """The first given latent, else mapping(seed) with truncation: the image SeFa's preview edits."""
    if latents:
        name, latent = next(iter(load_latents(latents[0], generator.num_ws, generator.w_dim,
                                              int(cfg["step"])).items()))
        return torch.from_numpy(np.asarray(latent)).to(device)[None], name
    if generator.c_dim:
        raise SgtoolError("this network is conditional: give a latent file for the SeFa preview")
    z = seed_to_z(int(cfg["preview_seed"]), generator.z_dim).to(device)
    with torch.no_grad():
        ws = generator.mapping(z, None, truncation_psi=float(cfg["preview_trunc"]))
    return ws, f"seed{int(cfg['preview_seed'])}"
