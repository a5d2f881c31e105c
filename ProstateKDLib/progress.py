"""Progress that suits where it goes: a tqdm bar on a terminal, a few plain lines in a log.

A log file, CI output or a pipe gets one line per item when there are at most
:data:`EVERY_ITEM_UP_TO` items, else the first item's line and then one line per
:data:`STEP_PERCENT` %: ``segment: 12/40 cases (30%), 41 s, about 96 s left``.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["LineProgress", "progress_bar"]

EVERY_ITEM_UP_TO = 20
STEP_PERCENT = 5


class LineProgress:
    """The part of tqdm's interface batch loops use (``update``, ``write``, ``close``), as plain lines."""

    def __init__(self, total: int, desc: str, unit: str = "it", file: TextIO | None = None,
                 disable: bool = False) -> None:
        if total < 0:
            raise ValueError(f"total must be >= 0, got {total}")
        self.total, self.desc, self.unit, self.disable = total, desc, unit, disable
        self.file = file if file is not None else sys.stderr
        self.n, self._shown, self._start = 0, -1, time.monotonic()

    def _due(self) -> bool:
        if self.n >= self.total or self.total <= EVERY_ITEM_UP_TO:
            return True
        return self.n * 100 // self.total // STEP_PERCENT > self._shown * 100 // self.total // STEP_PERCENT

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` items; print a line when one is due."""
        self.n += n
        if self.disable or not self._due():
            return
        self._shown = self.n
        elapsed = time.monotonic() - self._start
        units = self.unit if self.total == 1 else f"{self.unit}s"
        line = f"{self.desc}: {self.n}/{self.total} {units} ({100 * self.n // max(self.total, 1)}%), {elapsed:.0f} s"
        if 0 < self.n < self.total:
            line += f", about {elapsed / self.n * (self.total - self.n):.0f} s left"
        print(line, file=self.file, flush=True)

    def write(self, message: str, file: TextIO | None = None) -> None:
        """Print ``message`` on its own line."""
        print(message, file=file or self.file, flush=True)

    def close(self) -> None:
        """Nothing to clean up (tqdm compatibility)."""


def progress_bar(total: int, desc: str, unit: str = "it", file: TextIO | None = None, disable: bool = False) -> Any:
    """A tqdm bar when ``file`` (default stderr) is a terminal, else a :class:`LineProgress`."""
    stream = file if file is not None else sys.stderr
    try:
        terminal = bool(stream.isatty())
    except (AttributeError, ValueError):
        terminal = False
    if terminal:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=stream, disable=disable)
    return LineProgress(total, desc, unit, stream, disable)
