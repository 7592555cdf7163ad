"""Errors that reach the user as one clear line (exit code 2), never as a traceback."""


class SgtoolError(Exception):
    """Bad input or usage: the message names the file or option and how to fix it."""

    exit_code = 2


class CheckpointError(SgtoolError):
    """A checkpoint that cannot be loaded (wrong kind, truncated, unsafe, mismatched)."""
