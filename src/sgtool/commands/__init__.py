"""Thin Typer commands: parse options, load config, call a pipeline, report."""
