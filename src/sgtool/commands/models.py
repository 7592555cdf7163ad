"""`sgtool models list|download|path|verify`: the registry of public checkpoints and the local cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .. import hub
from ..errors import SgtoolError
from ..hub.cache import read_record
from .common import console, reports_errors
from .options import JsonOption, Run

models_app = typer.Typer(
    name="models",
    help="List, download and verify public checkpoints (StyleGAN3/2 generators, encoders, directions, backbones).",
    no_args_is_help=True,
    add_completion=False,
)

OfflineOpt = Annotated[bool, typer.Option("--offline", help="Never touch the network (also SGTOOL_OFFLINE=1).")]
KindOpt = Annotated[Optional[str], typer.Option("--kind", help="Only generator, encoder, direction or backbone.")]


def _entries(kind: str | None) -> list[hub.ModelEntry]:
    if kind is not None and kind not in hub.KINDS:
        raise SgtoolError(f"--kind must be one of {', '.join(hub.KINDS)}, got {kind!r}")
    return [e for e in hub.load_registry().values() if kind is None or e.kind == kind]


def _size_text(size: int | None) -> str:
    if size is None:
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return ""


@models_app.command("list")
@reports_errors
def list_models(kind: KindOpt = None, json_out: JsonOption = False,
                runs: Annotated[Optional[Path], typer.Option("--runs", help="List the train-encoder runs under this "
                                                             "folder instead (their best.pt loads with --encoder).")]
                = None):
    """Show every registry name, what it is, and whether it is in the cache."""
    if runs is not None:
        return _list_runs(runs, Run(json=json_out))
    rows = []
    for entry in _entries(kind):
        path = hub.cached_path(entry)
        cached = path.is_file()
        rows.append({**entry.to_dict(), "cached": cached, "path": str(path),
                     "cached_size": path.stat().st_size if cached else None})
    run = Run(json=json_out)
    table = Table(title=f"models ({hub.registry_path()}), cache: {hub.models_dir()}", title_justify="left")
    table.add_column("name", no_wrap=True)  # whole, so that it can be copied from a log or a pipe
    for column in ("kind", "cached", "description", "used by"):
        table.add_column(column, overflow="fold")
    for row in rows:
        cached = f"[green]yes[/] {_size_text(row['cached_size'])}" if row["cached"] else "[dim]no[/]"
        table.add_row(row["name"], row["kind"], cached, row["description"], ", ".join(row["used_by"]))
    run.show(rows, table)
    run.say("Licences: `sgtool models list --json` (most weights are non-commercial). "
            "Fetch one with `sgtool models download NAME`.")


def _list_runs(folder: Path, run: Run) -> None:
    from ..pipelines.train_encoder import find_runs

    found = find_runs(folder)
    table = Table(title=f"encoder runs under {folder}", title_justify="left")
    for column in ("run", "arch", "status", "step", "best val loss", "best"):
        table.add_column(column, overflow="fold")
    for row in found:
        loss = "" if row["best_val_loss"] is None else f"{row['best_val_loss']:.4f}"
        table.add_row(*(escape(str(value)) for value in (row["run"], row["arch"], row["status"], row["step"] or "",
                                                         loss, row["best"] or "")))
    if found:
        run.show({"runs": found}, table)
    else:
        run.report({"runs": found}, f"no train-encoder runs under {folder}")


@models_app.command("download")
@reports_errors
def download(
    names: Annotated[list[str], typer.Argument(help="Registry names (see `sgtool models list`).")],
    force: Annotated[bool, typer.Option("--force", help="Download again even if cached.")] = False,
    offline: OfflineOpt = False,
    json_out: JsonOption = False,
):
    """Download checkpoints into the cache (resumable; size and SHA-256 checked before they are kept)."""
    run = Run(json=json_out)
    entries = [hub.get_entry(name) for name in names]  # every name checked before any download starts
    results, failures = [], []
    for entry in entries:
        try:
            path = hub.ensure_model(entry, offline=True if offline else None, force=force,
                                    progress=False if json_out else None)
        except SgtoolError as exc:
            if len(entries) == 1:
                raise
            failures.append(exc)
            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            results.append({"name": entry.name, "status": "failed", "error": str(exc)})
            continue
        results.append({"name": entry.name, "status": "ok", "path": str(path),
                        "sha256": (read_record(entry) or {}).get("sha256"),
                        "licence": entry.licence})
        run.say(f"[green]ok[/] {escape(entry.name)} -> {escape(str(path))}", markup=True)
    run.report(results, f"{len(entries) - len(failures)} of {len(entries)} checkpoint(s) in {hub.models_dir()}")
    if failures:
        raise typer.Exit(2 if len(failures) == len(entries) else 1)


@models_app.command("path")
@reports_errors
def path(name: Annotated[str, typer.Argument(help="Registry name.")]):
    """Print where NAME lives in the cache (exit 1, with a hint on stderr, if it is not downloaded yet)."""
    entry = hub.get_entry(name)
    target = hub.cached_path(entry)
    typer.echo(str(target))
    if not target.is_file():
        console.print(f"{entry.name} is not downloaded yet: `sgtool models download {entry.name}`", markup=False,
                      highlight=False)
        raise typer.Exit(1)


@models_app.command("verify")
@reports_errors
def verify(
    name: Annotated[Optional[str], typer.Argument(help="Registry name; all cached models when omitted.")] = None,
    json_out: JsonOption = False,
):
    """Re-hash cached checkpoints against the published SHA-256 or the one recorded at first download."""
    run = Run(json=json_out)
    entries = [hub.get_entry(name)] if name else _entries(None)
    results = [hub.verify_model(entry) for entry in entries]
    if name and results[0]["status"] == "missing":
        raise SgtoolError(f"{name} is not downloaded ({results[0]['path']}); `sgtool models download {name}`")
    styles = {"ok": "green", "recorded": "cyan", "mismatch": "bold red"}
    notes = {"ok": "matches the {basis} SHA-256", "recorded": "no published SHA-256: this file's hash is now the "
             "reference", "mismatch": "{problem}"}
    lines = [f"[{styles[r['status']]}]{r['status']}[/] {r['name']}: "
             + notes[r["status"]].format(basis=r.get("basis"), problem=r.get("problem", ""))
             for r in results if r["status"] != "missing"]
    if lines:
        run.show(results, "\n".join(lines))
    else:
        run.report(results, "nothing is cached yet; `sgtool models download NAME`")
    if any(r["status"] == "mismatch" for r in results):
        console.print("re-download a broken file with `sgtool models download NAME --force`")
        raise typer.Exit(1)
