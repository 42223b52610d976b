"""Balances a run keeps besides the samples: connections the pool managers handed out against the
cold starts that adopted one, and the server sessions PostgreSQL opened per arm.

Sessions per arm. PostgreSQL counts every session it establishes (pg_stat_database.sessions). An
arm's cost is the counter's growth across each of its blocks: blocks run one at a time, so a
block's growth belongs to its scenario, warm-ups included. Two things would leak across a block
boundary, and are waited out before each reading: the pool manager refilling sessions it handed
out (asynchronous, after the function already exited), and a session's stats becoming visible.
The harness's own psql sessions (the balance check) fall between windows and count for no arm.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .function_specs import injected

SETTLE_TIMEOUT_S = 10.0
SETTLE_POLL_S = 0.05
STABLE_WAIT_S = 0.3  # between two equal readings of the session counter
STABLE_READS = 4


def handed_out_total(stats: Mapping[str, Any] | None) -> int:
    pools = (stats or {}).get("pools") or {}
    return sum(int(p.get("handed_out", 0)) for p in pools.values())


def pools_settled(stats: Mapping[str, Any] | None) -> bool:
    """Every pool is back at its size with nothing in flight (or its backend is down)."""
    for p in ((stats or {}).get("pools") or {}).values():
        if not p.get("backend_up", True):
            continue
        if p.get("connecting", 0) or p.get("waiters", 0):
            return False
        if int(p.get("idle", 0)) + int(p.get("settling", 0)) < int(p.get("min_idle", p.get("size", 0))):
            return False
    return True


class HandoutLedger:
    """Connections handed out by every pool manager of the run (one is restarted when a scenario
    stops it or the database arrives) against cold starts whose record says they adopted one."""

    def __init__(self) -> None:
        self.injected = 0
        self.retired = 0  # handed_out of managers already stopped
        self.unknown = ""  # why the balance cannot be checked (a manager's stats were lost)

    def count(self, records: Iterable[Mapping[str, Any] | None]) -> None:
        self.injected += sum(injected(r) for r in records)

    def retire(self, stats: Mapping[str, Any] | None) -> None:
        """A manager is about to stop: keep what it handed out."""
        if stats is None:
            self.unknown = self.unknown or "a pool manager's stats could not be read before it stopped"
        self.retired += handed_out_total(stats)

    def problems(self, stats: Mapping[str, Any] | None, running: bool) -> list[str]:
        if self.unknown:
            return []
        if running and stats is None:
            return []  # the manager died; validate() already says so through the paths
        total = self.retired + handed_out_total(stats if running else None)
        if total != self.injected:
            return [
                f"pool managers handed out {total} connections but {self.injected} cold starts adopted one "
                "(paths socket/fd3, warm-ups included)"
            ]
        return []


class SessionLedger:
    """Server sessions opened per scenario, measured per block (see the module's docstring)."""

    def __init__(
        self,
        read_sessions: Callable[[], int],
        settle: Callable[[], None],
        *,
        stable_wait: float = STABLE_WAIT_S,
        stable_reads: int = STABLE_READS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._read = read_sessions
        self._settle = settle
        self._stable_wait = stable_wait
        self._stable_reads = max(2, stable_reads)
        self._sleep = sleep
        self.open_scenario: str | None = None
        self._baseline = 0
        # The stable reading that closed the last window, while nothing can have opened a session
        # since (see touch): the next window's baseline, saving a settle and a stable read.
        self._closed_value: int | None = None
        self.tallies: dict[str, dict[str, int]] = {}

    def _stable_read(self) -> tuple[int, bool]:
        value = self._read()
        for _ in range(self._stable_reads - 1):
            self._sleep(self._stable_wait)
            again = self._read()
            if again == value:
                return value, True
            value = again
        return value, False

    def open(self, scenario_id: str) -> None:
        self.close()
        if self._closed_value is not None:
            self._baseline = self._closed_value
        else:
            self._settle()
            self._baseline, _ = self._stable_read()
        self._closed_value = None
        self.open_scenario = scenario_id

    def touch(self) -> None:
        """Something outside any arm may open sessions now (a pool manager starting, PgBouncer, the
        harness's own psql): the next window takes a fresh baseline."""
        self._closed_value = None

    def count(self, scenario_id: str, cold_starts: int) -> None:
        if self.open_scenario == scenario_id:
            self._tally(scenario_id)["cold_starts"] += cold_starts

    def close(self) -> None:
        if self.open_scenario is None:
            return
        scenario_id, self.open_scenario = self.open_scenario, None
        self._settle()
        value, stable = self._stable_read()
        tally = self._tally(scenario_id)
        tally["sessions"] += value - self._baseline
        tally["blocks"] += 1
        tally["unstable"] += not stable
        self._closed_value = value if stable else None

    def _tally(self, scenario_id: str) -> dict[str, int]:
        return self.tallies.setdefault(scenario_id, {"sessions": 0, "cold_starts": 0, "blocks": 0, "unstable": 0})


def wait_settled(read_stats: Callable[[], Mapping[str, Any] | None], timeout: float = SETTLE_TIMEOUT_S) -> bool:
    """Poll the manager's stats until its pools are refilled; False when the time ran out."""
    deadline = time.monotonic() + timeout
    while True:
        stats = read_stats()
        if stats is None or pools_settled(stats):
            return stats is not None
        if time.monotonic() > deadline:
            return False
        time.sleep(SETTLE_POLL_S)
