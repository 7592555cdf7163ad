"""A training run's record (run.json): what --resume continues with, and the runs a folder holds."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from ...errors import SgtoolError
from ...settings import TrainEncoderSettings
from ...settings.base import old_names
from ...utils.records import read_json
from . import checkpoints as ckpts

RESUMABLE_CHANGES = {"steps", "val_every", "save_every", "keep_last", "log_every", "workers", "grid_images",
                     "device", "kernels", "resume", "outdir"}


def resume_settings(settings: TrainEncoderSettings, given: set[str]) -> tuple[TrainEncoderSettings, dict]:
    """The run's recorded settings with the options given now; refuses changes that would make a
    different run (another architecture, data or loss)."""
    run = Path(settings.resume)
    record = run / "run.json"
    if not record.is_file():
        raise SgtoolError(f"--resume {run}: not a training run (no run.json); pass the -o folder of a "
                          "train-encoder run")
    renames = old_names(TrainEncoderSettings)  # a run recorded before a setting was renamed
    try:
        data = read_json(record)
        saved = {renames.get(k, k): v for k, v in data["settings"].items()}
        if "arch" not in saved:
            raise ValueError("no arch")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise SgtoolError(f"--resume {run}: {record} is not a train-encoder record ({type(exc).__name__}: {exc}); "
                          "start a new run with -o") from None
    given = {renames.get(k, k) for k in given}
    current = settings.model_dump(mode="json")
    changed = sorted(k for k in given if k in saved and current.get(k) != saved[k] and k not in RESUMABLE_CHANGES)
    if changed:
        what = ", ".join(f"{k} {saved[k]!r} -> {current[k]!r}" for k in changed)
        raise SgtoolError(f"--resume {run} is a {saved['arch']} run; it cannot change {what}; start a new run "
                          "with -o instead")
    merged = dict(saved)
    merged.update({k: current[k] for k in given if k in RESUMABLE_CHANGES})
    merged.update(resume=str(run), outdir=str(run))
    try:
        resumed = TrainEncoderSettings(**merged)
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise SgtoolError(f"--resume {run}: the setting {'.'.join(map(str, problem['loc']))} recorded in {record} is "
                          f"unusable ({problem['msg']}); start a new run with -o") from None
    return resumed, ckpts.read_resume_state(run)


def find_runs(folder) -> list[dict]:
    """The train-encoder runs under `folder` (any depth): arch, status, step, best checkpoint."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SgtoolError(f"--runs {folder} is not a folder")
    runs = []
    for record in sorted(folder.rglob("run.json")):
        try:
            data = read_json(record)
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or "arch" not in data or "settings" not in data:
            continue  # another command's run.json
        best = record.parent / "best.pt"
        step, loss = data.get("step"), data.get("best_val_loss")
        runs.append({"run": str(record.parent), "arch": str(data["arch"]), "status": str(data.get("status")),
                     "step": step if isinstance(step, int) and not isinstance(step, bool) else None,
                     "best_val_loss": float(loss) if isinstance(loss, (int, float)) and not isinstance(loss, bool)
                     else None,
                     "best": str(best) if best.is_file() else None})  # a record's values as the types they should be
    return runs
