"""The stage cache of a clip run: one folder per stage and key, never shared by runs with other settings.

`OUTDIR/cache/<stage>/<key>/` holds what one stage made for one combination of the settings it
depends on. The key is a digest of those settings, of the files they name (identity: path, size,
modification time) and of the key of the stage before it, so a run with other settings works in
other folders and never overwrites this one's results. `stage.json` in the folder says whether the
stage completed (then it is reused) or was interrupted (then it resumes). Every file is written
under a temporary name and renamed, so a kill never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np

from ...utils.io import atomic_path, write_json
from ...utils.records import read_json

CACHE_VERSION = 2  # bump when a stage's products change meaning


class StageEntry:
    """The folder of one stage under one key; `meta` is written into its record when it completes."""

    def __init__(self, root: Path, stage: str, key: str, force: bool):
        self.stage = stage
        self.key = key
        self.dir = root / stage / key
        self.force = force
        self.meta: dict = {}
        self.resumed = False

    @property
    def record(self) -> dict | None:
        try:
            return read_json((self.dir / "stage.json"))
        except (OSError, ValueError):
            return None

    @property
    def done(self) -> bool:
        record = None if self.force else self.record
        return bool(record and record.get("complete"))

    @property
    def resuming(self) -> bool:
        """An interrupted run of this stage under this key: its partial results are kept."""
        record = None if self.force else self.record
        return bool(record and not record.get("complete"))

    def open(self, settings: dict, after: str | None) -> None:
        """Start the stage, or resume it (`resumed`); a fresh start clears whatever the folder held."""
        self.resumed = self.resuming
        if not self.resumed:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir.mkdir(parents=True)
            self._write(settings=settings, after=after, complete=False)

    def finish(self) -> None:
        self._write(**{**(self.record or {}), **self.meta, "complete": True})

    def _write(self, **record) -> None:
        write_json({"stage": self.stage, "key": self.key, **record}, self.dir / "stage.json")

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)


class StageCache:
    def __init__(self, outdir: Path, force: bool = False):
        self.root = Path(outdir) / "cache"
        self.force = force

    def entry(self, stage: str, key: str) -> StageEntry:
        return StageEntry(self.root, stage, key, self.force)


def save_npz(path: Path, **arrays) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    return path


@contextlib.contextmanager
def written_memmap(path: Path, shape: tuple, dtype=np.float32) -> Iterator[np.ndarray]:
    """A new .npy file filled through a memory map (arrays larger than memory); it appears once complete."""
    with atomic_path(path) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        yield array
        array.flush()
        del array


def publish(product: Path, target: Path) -> Path:
    """Give a cached product its published name, atomically (a hard link where the file system has them:
    cached files are only ever replaced, never changed in place)."""
    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.link(product, tmp)
        except OSError:
            shutil.copyfile(product, tmp)
    return target
