"""Spreading a batch over machines: `--shard K/N` and per-shard manifests that merge back into one.

Split rule (documented for users): an input belongs to shard K of N when
    int(sha256(key).hexdigest()[:16], 16) % N == K - 1
where `key` is the input's file name without its extension (the stem commands name their outputs
after, so inputs that would share an output name, e.g. a.jpg and a.png, always land in the same
shard and are told apart there exactly as in an unsharded run). The rule depends only on the
input itself, not on the listing order, the folder it sits in or which other files exist, so every
machine assigns every input to the same shard even if their listings differ or files arrive while
the array job runs; all N shards together cover every input exactly once. Each shard keeps its
inputs in the order the command listed them.

Each shard writes its per-input outputs as usual, its command summary under a shard name
(alignment-shard2of4.json, invert-shard2of4.json, ...) and `manifest-<command>-shard<K>of<N>.json`;
`sgtool merge-manifests` joins them into `manifest-<command>.json` plus the usual summary
(alignment.json, invert.json, edits.json) and reports missing shards, inputs done twice and
failed items.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

from .. import __version__
from ..errors import SgtoolError
from .io import write_json
from .records import read_json

T = TypeVar("T")
MANIFEST_FORMAT = "sgtool-manifest"
MANIFEST_VERSION = 1
STATUSES = ("ok", "skipped", "failed", "not_run")  # skipped: done by an earlier run; not_run: interrupted
DONE = ("ok", "skipped")


@dataclass(frozen=True)
class Shard:
    """Shard `index` (1-based) of `count`."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, key: str) -> bool:
        return shard_of(key, self.count) == self.index


def parse_shard(text: str | None) -> Shard | None:
    """'2/8' -> Shard(2, 8); None or '' -> None (the whole batch)."""
    if text is None or not str(text).strip():
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise SgtoolError(f"--shard expects K/N such as 3/8, got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise SgtoolError(f"--shard {text}: K must be between 1 and N (shards are numbered from 1; with a Slurm "
                          "array started as --array=1-N pass --shard $SLURM_ARRAY_TASK_ID/N)")
    return Shard(index, count)


def shard_of(key: str, count: int) -> int:
    """The 1-based shard that owns `key` among `count` shards (stable across machines and Python runs)."""
    digest = hashlib.sha256(str(key).encode("utf-8")).hexdigest()
    return int(digest[:16], 16) % count + 1


def default_key(item) -> str:
    return Path(str(item)).stem


def select_shard(items: Iterable[T], shard: Shard | None, key: Callable[[T], str] = default_key) -> list[T]:
    """The items of `shard` (all items when None), in their given order (commands list inputs sorted)."""
    items = list(items)
    if shard is None:
        return items
    return [item for item in items if shard.owns(key(item))]


def shard_file_name(name: str, shard: Shard | None) -> str:
    """'alignment.json' -> 'alignment-shard2of4.json': shards sharing an output folder never overwrite
    each other's summary files (per-input outputs never collide: each input belongs to one shard)."""
    if shard is None:
        return name
    path = Path(name)
    width = len(str(shard.count))
    return f"{path.stem}-shard{shard.index:0{width}d}of{shard.count}{path.suffix}"


def manifest_path(outdir: str | Path, command: str, shard: Shard | None) -> Path:
    """`manifest-<command>-shard<K>of<N>.json` (K zero-padded so names sort), or `manifest-<command>.json`."""
    return Path(outdir) / shard_file_name(f"manifest-{command}.json", shard)


def write_manifest(outdir: str | Path, command: str, shard: Shard | None, items: Sequence[dict],
                   inputs_total: int | None = None, summary_file: str | None = None, extra: dict | None = None) -> Path:
    """Write one shard's manifest: one record per input ({"input", "status": "ok"|"failed", ...}).

    `summary_file`: the command's usual summary (e.g. "alignment.json"), which this shard wrote as
    `shard_file_name(summary_file, shard)` in `outdir`; merge-manifests joins those files too.
    """
    for item in items:
        if "input" not in item or item.get("status") not in STATUSES:
            raise ValueError(f"manifest items need 'input' and a status of {', '.join(STATUSES)}, got {item!r}")
    manifest = {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "command": command,
        "shard": None if shard is None else {"index": shard.index, "count": shard.count},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "sgtool_version": __version__,
        "inputs_total": inputs_total, "items": list(items), **(extra or {}),
    }
    if summary_file is not None:
        manifest["summary"] = {"file": summary_file, "shard_file": shard_file_name(summary_file, shard)}
    return write_json(manifest, manifest_path(outdir, command, shard))


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise SgtoolError(f"manifest {path} does not exist") from None
    except ValueError as exc:
        raise SgtoolError(f"manifest {path} is not valid JSON ({exc}); was the shard interrupted?") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("items"), list):
        raise SgtoolError(f"{path} is not an sgtool manifest (no format: {MANIFEST_FORMAT} / items)")
    return data


def find_manifests(paths: Iterable[str | Path]) -> list[Path]:
    """Manifest files named directly, or the shard manifests inside given folders."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(sorted(path.glob("manifest-*-shard*of*.json")))
        elif path.is_file():
            found.append(path)
        else:
            raise SgtoolError(f"{path} does not exist; give manifest files or the folders that hold them")
    if not found:
        raise SgtoolError("no shard manifests (manifest-<command>-shard<K>of<N>.json) found in "
                          + ", ".join(map(str, paths)))
    return list(dict.fromkeys(found))


def merge_manifests(paths: Iterable[str | Path]) -> dict:
    """Join shard manifests of one command into one, noting missing shards, duplicates and failures."""
    files = [Path(p) for p in paths]
    manifests = [(path, read_manifest(path)) for path in files]
    commands = {m["command"] for _, m in manifests}
    if len(commands) != 1:
        raise SgtoolError(f"these manifests come from different commands ({', '.join(sorted(commands))}); "
                          "merge each command's manifests separately")
    counts = {m["shard"]["count"] for _, m in manifests if m.get("shard")}
    if len(counts) > 1:
        raise SgtoolError(f"these manifests split the batch in different ways (N = {sorted(counts)}); "
                          "merge manifests of one run only")
    count = counts.pop() if counts else None
    seen_shards: dict[int, Path] = {}
    by_input: dict[str, dict] = {}
    duplicates: list[str] = []
    for path, manifest in manifests:
        shard = manifest.get("shard")
        if shard:
            if shard["index"] in seen_shards:
                raise SgtoolError(f"{path} and {seen_shards[shard['index']]} are both shard "
                                  f"{shard['index']}/{count}; keep one of them")
            seen_shards[shard["index"]] = path
        for item in manifest["items"]:
            key = str(item["input"])
            previous = by_input.get(key)
            if previous is not None:
                duplicates.append(key)
                if previous["status"] in DONE:
                    continue  # keep a success over a later failure of the same input
            by_input[key] = {**item, "manifest": str(path)}
    missing = sorted(set(range(1, count + 1)) - set(seen_shards)) if count else []
    items = [by_input[key] for key in sorted(by_input)]
    failed = [item["input"] for item in items if item["status"] not in DONE]
    return {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "command": commands.pop(),
        "shard": None, "merged_from": [str(p) for p in files], "shard_count": count, "missing_shards": missing,
        "duplicates": sorted(set(duplicates)), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sgtool_version": __version__,
        "summary": {"inputs": len(items), "ok": len(items) - len(failed), "failed": len(failed)},
        "items": items,
    }


def merge_summaries(paths: Iterable[str | Path]) -> dict[str, dict]:
    """The commands' own summary files of the shards, joined: {"alignment.json": {...}}.

    Lists (items, failed, faces...) are concatenated in shard order; values every shard agrees on
    (the settings) are kept; values that differ (per-shard means) become null rather than wrong.
    The joined summary is no shard's: its `shard` is null and its `counts` are those of its items.
    """
    groups: dict[str, list[dict]] = {}
    folders: dict[str, list[Path]] = {}
    for path in map(Path, paths):
        summary = read_manifest(path).get("summary")
        if not summary:
            continue
        shard_path = path.parent / summary["shard_file"]
        folders.setdefault(summary["file"], []).append(path.parent)
        try:
            groups.setdefault(summary["file"], []).append(read_json(shard_path))
        except FileNotFoundError:
            raise SgtoolError(f"{shard_path} (named by {path}) does not exist; rerun that shard") from None
        except ValueError as exc:
            raise SgtoolError(f"{shard_path} is not valid JSON ({exc}); rerun that shard") from None
    merged: dict[str, dict] = {}
    for name, parts in groups.items():
        keys = list(dict.fromkeys(k for part in parts for k in part))
        out = {}
        for key in keys:
            values = [part.get(key) for part in parts]
            if all(isinstance(v, list) for v in values):
                out[key] = [x for v in values for x in v]
            else:
                out[key] = values[0] if all(v == values[0] for v in values) else None
        if "shard" in out:
            out["shard"] = None
        if "counts" in out and isinstance(out.get("items"), list):
            out["counts"] = {status: sum(1 for item in out["items"] if item.get("status") == status)
                             for status in STATUSES}
        for key in LATENT_TABLES:
            files = [_shard_file(part.get(key), folder) for part, folder in zip(parts, folders[name])]
            if any(files):
                out[key] = _merge_latent_tables([f for f in files if f], folders[name][0] / f"{key}.npy")
        merged[name] = out
    return merged


# Summary keys that name a per-shard latents dict (invert's latents-shardKofN.npy): merged into one KEY.npy.
LATENT_TABLES = ("latents",)


def _shard_file(value, folder: Path) -> Path | None:
    """A file a shard's summary names: as written (relative to where the shard ran), else in the shard's folder."""
    if not value:
        return None
    path = Path(value)
    return path if path.is_file() else folder / path.name if (folder / path.name).is_file() else None


def _merge_latent_tables(files: list[Path], target: Path) -> str:
    """One stylegan3-editing latents dict (file name -> per-step codes) from the shards' dicts."""
    import numpy as np

    from ..latents import load_npy
    from .io import save_npy

    joined: dict = {}
    for path in files:
        table = load_npy(path)
        if not isinstance(table, dict):
            raise SgtoolError(f"{path} is not a latents dict (file name -> codes); rerun that shard")
        joined.update(table)
    return str(save_npy(np.array(joined, dtype=object), target, allow_pickle=True))


def merge_outdir(paths: Iterable[str | Path], output: str | Path | None = None) -> dict:
    """`sgtool merge-manifests`: join the shard manifests found in `paths` into `output` (default:
    manifest-<command>.json beside the first shard's) and their summaries beside it; returns the merged
    manifest with `output` and the written `summaries`."""
    files = find_manifests(paths)
    merged = merge_manifests(files)
    target = Path(output) if output is not None else manifest_path(files[0].parent, merged["command"], None)
    # The commands' own summaries (e.g. alignment.json, read by --transforms) are joined beside it.
    merged["summaries"] = [str(write_json(content, target.parent / name))
                           for name, content in merge_summaries(files).items()]
    write_json(merged, target)
    return {**merged, "output": str(target)}
