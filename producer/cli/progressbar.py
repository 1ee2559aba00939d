"""A one-line text progress bar for the CLIs (no dependencies)."""

from __future__ import annotations

import sys
from typing import Any


class ProgressBar:
    """A one-line text progress bar on a stream, redrawn in place."""

    def __init__(self, stream: Any = sys.stderr, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._decile = -1

    def __call__(self, p: Any) -> None:
        """Draw the bar for a :class:`worker.nst.engine.Progress`-like object."""
        done = int(self.width * p.iteration / max(1, p.total))
        levels = getattr(p, "levels", 1)
        level = f"level {p.level}/{levels} " if levels > 1 else ""
        line = (
            f"[{'#' * done}{'.' * (self.width - done)}] {p.iteration}/{p.total} {level}"
            f"loss {p.loss:.4g} {p.elapsed_s / max(1, p.iteration):.2f} s/it"
        )
        if self.tty:
            self.stream.write("\r" + line)
        else:  # a log file: one line per tenth of the way (updates may skip iterations)
            decile = 10 * p.iteration // max(1, p.total)
            if decile <= self._decile and p.iteration != p.total:
                return
            self._decile = decile
            self.stream.write(line + "\n")
        self.stream.flush()

    def outage(self, down_s: float) -> None:
        """Say on the progress line that Redis has been unreachable for ``down_s`` seconds."""
        line = f"Redis unreachable for {down_s:.0f} s; still waiting"
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the line."""
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
