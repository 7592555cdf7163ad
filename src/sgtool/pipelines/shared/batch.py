"""The batch runner of the per-item commands (align, invert, tune, edit, expand-fov).

One place decides which files a command takes, the output name of each (stable and unique),
which items a `--shard K/N` owns, what happens when an item fails (recorded; the batch goes on),
what Ctrl-C does (finish the current item, record the rest as not run), the manifest schema and
the exit code:

    batch = Batch("invert", inputs, outdir, shard=Shard(2, 8))
    report = batch.run(lambda item: {"outputs": [...], ...})
    report.write("invert.json", extra={...})   # + manifest-invert-shard2of8.json when sharded

Every item of every summary and manifest is {"input", "name", "status", "outputs", "error", ...}
with status ok | failed | skipped | not_run.
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ...errors import SgtoolError
from ...progress import SILENT, Reporter
from ...utils.batch import DONE, Shard, select_shard, shard_file_name, write_manifest
from ...utils.io import write_json
from ...utils.records import read_json

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"})
LATENT_SUFFIXES = frozenset({".npy"})


def collect(paths: Iterable[str | os.PathLike], suffixes: Iterable[str] = IMAGE_SUFFIXES,
            what: str = "image") -> list[Path]:
    """Files, folders (their files with `suffixes`, sorted) and globs -> paths in order, without duplicates."""
    suffixes = frozenset(suffixes)
    out: list[Path] = []
    for raw in paths:
        text = str(raw)
        path = Path(text)
        if not text.strip():
            raise SgtoolError("an input path is empty; give files, folders or quoted globs")
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                raise SgtoolError(f"{path} holds no {what} files ({', '.join(sorted(suffixes))})")
        elif path.exists():
            found = [path]
        elif any(ch in text for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not found:
                raise SgtoolError(f"no file matches {text}")
        else:
            raise SgtoolError(f"{path}: no such file or directory")
        out += [p for p in found if p not in out]
    if not out:
        raise SgtoolError(f"no input {what}s given; pass {what} files, folders or globs")
    return out


@dataclass(frozen=True)
class Item:
    """One input and the stem its outputs are named after (unique within the batch)."""

    source: Path
    name: str

    @property
    def key(self) -> str:
        """The file name in stylegan3-editing's dicts (latents.npy): the unique stem plus the suffix."""
        return self.name + self.source.suffix


def name_items(sources: Iterable[Path], stem: Callable[[Path], str] = lambda path: path.stem) -> list[Item]:
    """Output stems: `stem(file)` (the file stem); inputs sharing one get _2, _3... in input order."""
    items, used = [], set()
    for source in sources:
        base = stem(Path(source))
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        items.append(Item(Path(source), name))
    return items


@dataclass
class Result:
    """How one item went; `record` holds the command's own fields (written with the item)."""

    item: Item
    status: str
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    record: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"input": str(self.item.source), "name": self.item.name, "status": self.status,
                "outputs": [str(o) for o in self.outputs], "error": self.error, **self.record}


class StopRequest:
    """First Ctrl-C: finish the current item (or optimisation step) and stop. Second Ctrl-C: stop at once."""

    def __init__(self, reporter: Reporter = SILENT):
        self.requested = False
        self.reporter = reporter

    def __call__(self, *_args) -> bool:
        return self.requested

    @contextlib.contextmanager
    def installed(self) -> Iterator["StopRequest"]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum, frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            self.reporter.warn("stopping after the current item; press Ctrl-C again to stop at once")

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


@dataclass
class BatchReport:
    command: str
    outdir: Path
    shard: Shard | None
    results: list[Result]
    inputs_total: int
    interrupted: bool = False

    def of(self, status: str) -> list[Result]:
        return [r for r in self.results if r.status == status]

    @property
    def failed(self) -> list[dict]:
        return [{"input": str(r.item.source), "name": r.item.name, "error": r.error} for r in self.of("failed")]

    def items(self) -> list[dict]:
        return [r.as_dict() for r in self.results]

    @property
    def exit_code(self) -> int:
        """130 interrupted, 1 some items failed, 0 otherwise (a lone failed input is raised, exit 2)."""
        if self.interrupted:
            return 130
        return 1 if self.of("failed") else 0

    def summary(self, settings: dict | None = None, earlier: list[dict] = (), **extra) -> dict:
        """The record of this run; `earlier`: items an earlier run into the folder recorded for other inputs
        (`earlier_items`), listed first so that the record holds every output of the folder."""
        return {"command": self.command, "outdir": str(self.outdir),
                "shard": str(self.shard) if self.shard else None, "settings": settings,
                "counts": {s: len(self.of(s)) for s in ("ok", "skipped", "failed", "not_run")},
                "items": [*earlier, *self.items()], "failed": self.failed,
                **({"kept_from_earlier_runs": len(earlier)} if earlier else {}), **extra}

    def write(self, summary_file: str, settings: dict | None = None, earlier: list[dict] = (), **extra) -> dict:
        """Write the command's summary (per shard) and, for a shard, its manifest; returns the summary."""
        summary = self.summary(settings, earlier, **extra)
        write_json(summary, self.outdir / shard_file_name(summary_file, self.shard))
        if self.shard is not None:
            summary["manifest"] = str(write_manifest(self.outdir, self.command, self.shard, self.items(),
                                                     inputs_total=self.inputs_total, summary_file=summary_file))
        return summary


def settings_differences(before: dict, now: dict, ignored: Iterable[str] = ()) -> list[str]:
    """How a recorded run's settings differ from this run's, beyond `ignored`: "KEY X there, Y now" each."""
    ignored = set(ignored)
    before = before if isinstance(before, dict) else {}
    return [f"{k} {before.get(k)!r} there, {now.get(k)!r} now" for k in sorted(set(before) | set(now))
            if k not in ignored and before.get(k) != now.get(k)]


def earlier_items(record: Path, settings: dict, items: list[Item], ignored: Iterable[str] = ()) -> list[dict]:
    """The items an earlier run recorded in `record` (a command's summary in its output folder) for inputs this run
    does not take: kept, so that runs into one folder add up. Refused, before any work, when that run's settings
    differ beyond `ignored` (its outputs and these would not belong together) or when one of this run's inputs would
    write over an earlier input's outputs (the same name from another folder)."""
    try:
        data = read_json(Path(record))
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        return []
    taking = {Path(item.source).resolve() for item in items}
    kept = [entry for entry in data["items"] if isinstance(entry, dict) and entry.get("status") in DONE
            and isinstance(entry.get("input"), str) and Path(entry["input"]).resolve() not in taking]
    if not kept:
        return []
    differ = settings_differences(data.get("settings") or {}, settings, ignored)
    if differ:
        raise SgtoolError(f"{record} records outputs made with other settings ({'; '.join(differ[:3])}); write into "
                          "another --outdir, or delete that file to start the folder over")
    names = {entry.get("name"): entry["input"] for entry in kept}
    for item in items:
        if item.name in names:
            raise SgtoolError(f"{item.source} would write over the outputs of {names[item.name]} (both are named "
                              f"{item.name}) in {Path(record).parent}; write into another --outdir")
    return kept


class Batch:
    """The items of one command run; see the module docstring."""

    def __init__(self, command: str, sources: Iterable[Path], outdir: str | os.PathLike, shard: Shard | None = None,
                 reporter: Reporter = SILENT, stem: Callable[[Path], str] = lambda path: path.stem):
        self.command = command
        self.outdir = Path(outdir)
        self.shard = shard
        self.reporter = reporter
        self.all_items = name_items(sources, stem)
        self.items = select_shard(self.all_items, shard, key=lambda item: item.source.stem)
        if shard is not None and not self.items:
            reporter.warn(f"shard {shard} holds none of the {len(self.all_items)} inputs")
        self.stop = StopRequest(reporter)

    def run(self, process: Callable[[Item], dict | Result],
            skip: Callable[[Item], dict | None] | None = None, label: str | None = None) -> BatchReport:
        """`process(item)` returns the item's record ({"outputs": [...], ...}) or raises SgtoolError.

        `skip(item)` returns the record of an item already done (--skip-existing), or None.
        """
        return self.run_chunks(lambda item: None, lambda chunk: [process(item) for item, _ in chunk], 1, skip, label)

    def run_chunks(self, prepare: Callable[[Item], object], process: Callable[[list[tuple[Item, object]]], list],
                   size: int, skip: Callable[[Item], dict | None] | None = None,
                   label: str | None = None) -> BatchReport:
        """Like `run`, with the work done `size` items at a time (one encoder pass for several images).

        `prepare(item)` runs per item (a failure fails only that item); `process([(item, prepared), ...])`
        returns one record per item (a failure fails the whole chunk).
        """
        results: dict[Item, Result] = {}
        self.reporter.start(label or self.command, len(self.items))
        with self.stop.installed():
            for first in range(0, len(self.items), size):
                chunk = self.items[first:first + size]
                if self.stop.requested:
                    results.update({item: Result(item, "not_run") for item in self.items[first:]})
                    break
                ready = []
                for item in chunk:
                    done = skip(item) if skip is not None else None
                    if done is not None:
                        results[item] = _result(item, "skipped", done)
                        continue
                    failure = self._attempt(item, lambda: ready.append((item, prepare(item))))
                    if failure is not None:
                        results[item] = failure
                if ready:
                    records: list = []
                    failure = self._attempt(ready[0][0], lambda: records.extend(process(ready)))
                    for (item, _), record in zip(ready, records) if failure is None else ():
                        results[item] = _result(item, "ok", record)
                    if failure is not None:
                        results.update({item: Result(item, "failed", error=failure.error) for item, _ in ready})
                self.reporter.advance(len(chunk), info=chunk[-1].source.name)
        self.reporter.finish()
        return BatchReport(self.command, self.outdir, self.shard, [results[item] for item in self.items
                                                                   if item in results],
                           len(self.all_items), interrupted=self.stop.requested)

    def file_name(self, name: str) -> str:
        """A per-run summary file's name in this shard (`metrics.json` -> `metrics-shard2of8.json`)."""
        return shard_file_name(name, self.shard)

    def _attempt(self, item: Item, work: Callable[[], object]) -> Result | None:
        """Run `work`; a SgtoolError becomes a failed Result (raised when the batch has only one input)."""
        try:
            work()
            return None
        except SgtoolError as exc:
            if len(self.all_items) == 1:
                raise  # a single input that cannot be done is bad input: one line, exit 2
            self.reporter.warn(f"failed: {item.source}: {exc}")
            return Result(item, "failed", error=str(exc))


def _result(item: Item, status: str, value: dict | Result) -> Result:
    if isinstance(value, Result):
        return value
    record = dict(value or {})
    outputs = record.pop("outputs", [])
    return Result(item, status, outputs=list(outputs), record=record)
