"""`sgtool merge-manifests`: join the per-shard manifests of a `--shard K/N` batch into one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from .common import console, reports_errors
from .options import JsonOption, Run


@reports_errors
def merge_manifests(
    paths: Annotated[list[Path], typer.Argument(help="Shard manifest files, or folders holding them.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Merged manifest (default: "
                                                   "manifest-<command>.json beside the first shard's).")] = None,
    json_out: JsonOption = False,
):
    """Join the per-shard manifests of a --shard K/N batch into one.

    Exit code 1 when shards are missing or items failed (the merged manifest is written anyway).
    """
    from ..utils.batch import merge_outdir
    from ..utils.io import check_writable

    run = Run(json=json_out)
    if output is not None:
        check_writable(output, "file", "--output")
    merged = merge_outdir(paths, output)
    counts = merged["summary"]
    run.report({k: v for k, v in merged.items() if k != "items"},
               f"merged {len(merged['merged_from'])} manifest(s) of `{merged['command']}`: {counts['inputs']} "
               f"inputs, {counts['ok']} ok, {counts['failed']} failed -> {merged['output']}"
               + "".join(f", {path}" for path in merged["summaries"]))
    if not run.json:
        if merged["missing_shards"]:
            console.print(f"[yellow]missing shards: {', '.join(map(str, merged['missing_shards']))} of "
                          f"{merged['shard_count']}[/] (run them, then merge again)", highlight=False)
        if merged["duplicates"]:
            console.print(f"[yellow]{len(merged['duplicates'])} input(s) appear in more than one shard[/] "
                          f"(e.g. {escape(str(merged['duplicates'][0]))}); the successful record was kept",
                          highlight=False)
        for name in [i["input"] for i in merged["items"] if i["status"] not in ("ok", "skipped")][:10]:
            console.print(f"[red]failed[/] {escape(str(name))}", highlight=False)
    if merged["missing_shards"] or counts["failed"]:
        raise typer.Exit(1)
