"""`sgtool merge-manifests`: join the per-shard manifests of a `--shard K/N` batch into one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..utils.batch import find_manifests, manifest_path, merge_manifests as merge, merge_summaries
from ..utils.io import write_json
from .common import JsonOpt, console, emit_json, reports_errors


@reports_errors
def merge_manifests(
    paths: Annotated[list[Path], typer.Argument(help="Shard manifest files, or folders holding them.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Merged manifest (default: "
                                                   "manifest-<command>.json beside the first shard's).")] = None,
    json_out: JsonOpt = False,
):
    """Join the per-shard manifests of a --shard K/N batch into one.

    Exit code 1 when shards are missing or items failed (the merged manifest is written anyway).
    """
    files = find_manifests(paths)
    merged = merge(files)
    target = output or manifest_path(files[0].parent, merged["command"], None)
    # The commands' own summaries (e.g. alignment.json, read by --transforms) are joined beside it.
    merged["summaries"] = [str(write_json(content, target.parent / name))
                           for name, content in merge_summaries(files).items()]
    write_json(merged, target)
    summary = merged["summary"]
    if json_out:
        emit_json({**{k: v for k, v in merged.items() if k != "items"}, "output": str(target)})
    else:
        console.print(f"merged {len(files)} manifest(s) of `{merged['command']}`: {summary['inputs']} inputs, "
                      f"{summary['ok']} ok, {summary['failed']} failed -> {target}"
                      + "".join(f", {path}" for path in merged["summaries"]), highlight=False)
        if merged["missing_shards"]:
            console.print(f"[yellow]missing shards: {', '.join(map(str, merged['missing_shards']))} of "
                          f"{merged['shard_count']}[/] (run them, then merge again)", highlight=False)
        if merged["duplicates"]:
            console.print(f"[yellow]{len(merged['duplicates'])} input(s) appear in more than one shard[/] "
                          f"(e.g. {merged['duplicates'][0]}); the successful record was kept", highlight=False)
        for name in [i["input"] for i in merged["items"] if i["status"] != "ok"][:10]:
            console.print(f"[red]failed[/] {name}", highlight=False)
    if merged["missing_shards"] or summary["failed"]:
        raise typer.Exit(1)
