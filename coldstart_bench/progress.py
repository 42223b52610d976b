"""Live progress of long runs: done/total cold starts, rate and ETA, without flooding the terminal."""

from __future__ import annotations

import time
from collections.abc import Callable


def format_eta(seconds: float) -> str:
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Counts cold starts across the whole run; prints at most every `interval` seconds."""

    def __init__(
        self,
        total: int,
        write: Callable[[str], None],
        interval: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = max(total, 0)
        self.done = 0
        self._write = write
        self._interval = interval
        self._clock = clock
        self._started = clock()
        self._last = -1e9

    def restart_clock(self) -> None:
        """Start the ETA clock when measuring starts, not while images build."""
        self._started = self._clock()

    def add_planned(self, n: int) -> None:
        self.total += n

    def eta_seconds(self) -> float | None:
        if self.done == 0:
            return None
        elapsed = self._clock() - self._started
        return elapsed / self.done * max(self.total - self.done, 0)

    def line(self, label: str) -> str:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = self.eta_seconds()
        eta_text = format_eta(eta) if eta is not None else "?"
        return f"[coldstart-bench] {label}: {self.done}/{self.total} cold starts ({pct:.0f}%), ETA {eta_text}"

    def tick(self, label: str, n: int = 1, force: bool = False) -> None:
        self.done += n
        now = self._clock()
        if force or self.done >= self.total or now - self._last >= self._interval:
            self._last = now
            self._write(self.line(label))
