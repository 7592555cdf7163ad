"""What every subcommand shares: the console, error reporting, progress bars, checkpoint resolution."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..errors import SgtoolError
from ..progress import Reporter
from ..settings.base import Checkpoint, Output, Settings, metadata_of

# Messages and progress go to stderr; results (--json, tables and listings a person reads) to stdout.
console = Console(stderr=True)
results = Console(width=None if sys.stdout.isatty() else 160)  # a file or a pipe gets whole table rows

ShardOpt = Annotated[Optional[str], typer.Option(
    "--shard", help="Process only shard K of N of the inputs (K/N, from 1); join the shards' manifests with "
                    "`sgtool merge-manifests`.", rich_help_panel="Run")]


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def reports_errors(func: Callable) -> Callable:
    """Turn expected failures into one red line on stderr and exit code 2 (Ctrl-C: 130)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SgtoolError as exc:
            message = str(exc)
            if "\nOriginal Traceback" in message:  # raised in a DataLoader worker: PyTorch appended its traceback
                message = message.rstrip().splitlines()[-1].split("SgtoolError: ", 1)[-1]
            console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


def resolve_checkpoints(settings: Settings) -> Settings:
    """Before any work: every output path checked writable, every checkpoint setting resolved to a file
    (registry names found in the cache or downloaded) or a built-in name, the op backend selected.
    A bad path or name fails at once, with nothing written."""
    from ..hub import resolve_reference
    from ..utils.io import check_writable

    model = type(settings)
    for name in model.model_fields:
        output = metadata_of(model, name, Output)
        if output is not None and getattr(settings, name) is not None:
            check_writable(getattr(settings, name), output.kind, "--" + name.replace("_", "-"))
    updates = {}
    for name in model.model_fields:
        marker = metadata_of(model, name, Checkpoint)
        value = getattr(settings, name)
        if marker is not None and value is not None:
            updates[name] = resolve_reference(value, kind=marker.kind)
    kernels = getattr(settings, "kernels", None)
    if kernels is not None:
        from .. import kernels as kernel_ops

        kernel_ops.set_backend(kernels)
    return settings.model_copy(update=updates)


class RichReporter(Reporter):
    """Progress bars on stderr: one per task, nested tasks (a projection inside a batch) below their parent."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks: list = []

    def start(self, label: str, total: int | None = None) -> None:
        self.tasks.append(self.progress.add_task(label, total=total, info=""))

    def advance(self, count: int = 1, info: str = "") -> None:
        if self.tasks:
            self.progress.update(self.tasks[-1], advance=count, info=info)

    def finish(self) -> None:
        if self.tasks:
            self.progress.remove_task(self.tasks.pop())

    def warn(self, text: str) -> None:
        self.progress.console.print(f"[yellow]{escape(text)}[/]", highlight=False, soft_wrap=True)

    def note(self, text: str) -> None:
        self.progress.console.print(escape(text), highlight=False, soft_wrap=True)


def progress_bars(quiet: bool, transient: bool = True) -> Progress:
    """The progress bars of a command on a terminal (hidden with --json)."""
    columns = (TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    return Progress(*columns, console=console, transient=transient, disable=quiet)


def progress_line_seconds() -> float:
    """How often a log gets a progress line (SGTOOL_PROGRESS_SECONDS, default 30)."""
    try:
        return max(0.0, float(os.environ.get("SGTOOL_PROGRESS_SECONDS", "30")))
    except ValueError:
        return 30.0


@dataclass
class _LineTask:
    label: str
    total: int | None
    started: float
    done: int = 0
    info: str = ""


class LineReporter(Reporter):
    """Progress as plain lines on stderr, for logs and pipes (Slurm, `2> log`): a line at most every `interval`
    seconds while work goes on (what runs, how far, how long until the end), so a run that ends sooner prints
    none; warnings and notes at once."""

    def __init__(self, quiet: bool = False, interval: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.quiet = quiet
        self.interval = progress_line_seconds() if interval is None else interval
        self.clock = clock
        self.tasks: list[_LineTask] = []
        self.last_line = clock()

    def start(self, label: str, total: int | None = None) -> None:
        self.tasks.append(_LineTask(label, total, self.clock()))

    def advance(self, count: int = 1, info: str = "") -> None:
        if not self.tasks:
            return
        task = self.tasks[-1]
        task.done += count
        task.info = info
        now = self.clock()
        if not self.quiet and now - self.last_line >= self.interval:
            self.last_line = now
            self._print(" > ".join(self._describe(t, now) for t in self.tasks))

    def finish(self) -> None:
        if self.tasks:
            self.tasks.pop()

    def warn(self, text: str) -> None:
        self._print(text)

    def note(self, text: str) -> None:
        self._print(text)

    @staticmethod
    def _describe(task: _LineTask, now: float) -> str:
        elapsed = now - task.started
        parts = [f"{task.label}: {task.done}" + (f"/{task.total} ({100 * task.done / task.total:.0f}%)"
                                                 if task.total else ""), f"{_clock(elapsed)} elapsed"]
        if task.total and 0 < task.done < task.total:
            parts.append(f"about {_clock(elapsed * (task.total - task.done) / task.done)} left")
        return ", ".join(parts) + (f" [{task.info}]" if task.info else "")

    @staticmethod
    def _print(text: str) -> None:
        console.print(escape(f"{time.strftime('%H:%M:%S')} {text}"), highlight=False, soft_wrap=True)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


@contextlib.contextmanager
def reporting(quiet: bool, transient: bool = True) -> Iterator[Reporter]:
    """How a command shows progress: rich bars on a terminal, plain lines in a log or a pipe; no progress with
    --json (warnings and notes still print)."""
    if console.is_terminal:
        with progress_bars(quiet, transient) as bars:
            yield RichReporter(bars)
    else:
        yield LineReporter(quiet)


def record_file(summary: dict, name: str) -> str:
    """Where a batch wrote its record `name` (a shard writes invert-shard1of2.json for invert.json)."""
    from ..utils.batch import parse_shard, shard_file_name

    return str(Path(summary["outdir"]) / shard_file_name(name, parse_shard(summary["shard"])))


def finish_batch(run, summary: dict, message: str) -> None:
    """Report a batch command's result and leave with its exit code (1 when some items failed; each failure
    was printed as it happened)."""
    run.report(summary, message)
    code = summary.get("exit_code", 0)
    if code:
        raise typer.Exit(code)

