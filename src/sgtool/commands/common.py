"""Conventions every subcommand shares: options, config loading, error reporting, JSON output."""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console

from ..config import load_config
from ..errors import SgtoolError

# Human-facing output goes to stderr so that stdout stays clean for `--json`.
console = Console(stderr=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="YAML file overriding the command's defaults.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override one config key: --set key=value.")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto (CUDA when available), cpu or cuda.")]
KernelsOpt = Annotated[Optional[str], typer.Option("--kernels", help="Op backend: auto, ref or jit.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable results on stdout.")]
ShardOpt = Annotated[Optional[str], typer.Option(
    "--shard", help="Process only shard K of N of the inputs (K/N, from 1); join the shards' manifests with "
                    "`sgtool merge-manifests`.")]


@dataclass
class Context:
    """What a command needs after parsing: its merged config and the output mode."""

    config: dict
    json: bool

    def override(self, pairs) -> dict:
        """Put the CLI values that were given ((key, value) pairs, None = not given) over the config."""
        for key, value in pairs:
            if value is not None:
                self.config[key] = str(value) if isinstance(value, Path) else value
        return self.config


def setup(command: str, config_file: Path | None, overrides: list[str] | None, json_out: bool,
          device: str | None = None, kernels: str | None = None) -> Context:
    """Load `configs/<command>.yaml` (+ file + --set) and apply the device/kernel choices to it."""
    config = load_config(command, config_file, overrides or [])
    if device is not None:
        config["device"] = device
    if kernels is not None:
        config["kernels"] = kernels
    if "kernels" in config:
        from .. import kernels as kernel_ops

        try:
            kernel_ops.set_backend(str(config["kernels"]))
        except ValueError as exc:
            raise SgtoolError(f"--kernels: {exc}") from None
    return Context(config=config, json=json_out)


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
            console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper
