"""Progress of a sweep for people: a tqdm bar with ETA on a terminal, periodic plain lines in logs and pipes.

Both are what a sweep reports to (``gemm.tuner.search.sweep.Progress``), plus ``close``.
"""

from __future__ import annotations

import sys
import time

from gemm.cli.common import say
from gemm.tuner.search.sweep import Progress


class TqdmProgress(Progress):
    """Progress bar with ETA (tqdm, on stderr), for terminals."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=0, unit="run", desc="tune", file=sys.stderr, dynamic_ncols=True, smoothing=0.05)

    def add_total(self, n: int) -> None:
        self.bar.total = max(self.bar.n, (self.bar.total or 0) + n)
        self.bar.refresh()

    def advance(self, n: int = 1) -> None:
        self.bar.update(n)

    def note(self, text: str) -> None:
        self.bar.set_description(text)

    def write(self, text: str) -> None:
        """A line on stderr above the bar."""
        self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


class LineProgress(Progress):
    """Progress for logs and pipes: a plain line with ETA every ``every_s`` seconds (no carriage returns)."""

    def __init__(self, enabled: bool, every_s: float = 30.0) -> None:
        self.enabled, self.every_s = enabled, every_s
        self.total = self.done = 0
        self.label = ""
        self.start = self.last = time.monotonic()

    def add_total(self, n: int) -> None:
        self.total = max(self.done, self.total + n)

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self.last >= self.every_s:
            self.last = now
            elapsed = now - self.start
            eta = elapsed / self.done * max(0, self.total - self.done) if self.done else float("nan")
            say(f"tune {self.label}: {self.done}/{self.total} runs, {elapsed / 60:.1f} min elapsed, "
                f"ETA {eta / 60:.1f} min")

    def note(self, text: str) -> None:
        self.label = text

    def write(self, text: str) -> None:
        say(text)

    def close(self) -> None:
        pass


def make_progress(enabled: bool):
    """A tqdm bar on a terminal, periodic lines otherwise (or nothing when disabled)."""
    if enabled and sys.stderr.isatty():
        return TqdmProgress()
    return LineProgress(enabled)
