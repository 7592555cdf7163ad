"""Progress hooks that library code reports to; the command line shows them as rich progress bars."""

from __future__ import annotations


class Reporter:
    """Does nothing: what a notebook gets unless it passes its own."""

    def start(self, label: str, total: int | None = None) -> None:
        """A new task (a stage, a batch, an optimisation) of `total` units (None: unknown)."""

    def advance(self, count: int = 1, info: str = "") -> None:
        """`count` more units done; `info` is a short status (current file, loss)."""

    def finish(self) -> None:
        """The current task is done."""

    def warn(self, text: str) -> None:
        """Something the user should know that does not stop the work (a skipped file)."""

    def note(self, text: str) -> None:
        """A fact worth a line in the log (a run resuming from a checkpoint, a stage reused from its cache)."""


SILENT = Reporter()
