"""Testbed.prepare's order of switches, without an engine: the steps that touch containers are
replaced by recorders, the decisions (which delay on which backend, which session window) are the
real ones."""

from __future__ import annotations

from typing import Any

import pytest

from coldstart_bench.catalogue import default_catalogue
from coldstart_bench.measure.accounting import SessionLedger
from coldstart_bench.measure.testbed import Testbed

CAT = default_catalogue((1,))


class _Recorder(Testbed):
    """A Testbed whose container steps only record what they were asked."""

    def __init__(self, sessions: SessionLedger | None = None) -> None:  # no engine, no images
        self.calls: list[tuple[Any, ...]] = []
        self.sessions = sessions
        self.user = None
        self.pool: Any = None
        self.delay_ms, self.delay_target = 0.0, "echo"

    def ensure_pg(self) -> Any:
        self.calls.append(("ensure_pg",))

    def ensure_pgbouncer(self) -> Any:
        self.calls.append(("ensure_pgbouncer",))

    def ensure_tls(self) -> Any:
        self.calls.append(("ensure_tls",))

    def set_delay(self, delay_ms: float, target: str = "echo") -> str | None:
        if (delay_ms, target) != (self.delay_ms, self.delay_target) and (delay_ms or self.delay_ms):
            self.calls.append(("set_delay", delay_ms, target))
        self.delay_ms, self.delay_target = delay_ms, target
        return None

    def start_pool(self) -> None:
        if self.pool is None:
            self.calls.append(("start_pool",))
            if self.sessions is not None:
                self.sessions.touch()
            self.pool = object()

    def stop_pool(self) -> None:
        if self.pool is not None:
            self.calls.append(("stop_pool",))
            self.pool = None


@pytest.mark.parametrize("scenario", ["tls-direct-10ms", "direct-10ms", "pg-direct-10ms"])
def test_a_delayed_scenario_starts_one_sidecar_on_its_own_backend(scenario: str) -> None:
    bed = _Recorder()
    bed.prepare(CAT.by_id(scenario))
    delays = [c for c in bed.calls if c[0] == "set_delay"]
    target = {"tls-direct-10ms": "tls", "direct-10ms": "echo", "pg-direct-10ms": "pg"}[scenario]
    assert delays == [("set_delay", 10.0, target)], bed.calls


def test_pg_blocks_in_the_same_state_share_one_reading_between_windows() -> None:
    reads: list[int] = []
    # A counter that is stable on every second read: each stable reading costs two reads.
    counter = iter([0, 0, 4, 4, 9, 9, 9, 9, 15, 15])
    ledger = SessionLedger(lambda: (reads.append(1), next(counter))[1], lambda: None, stable_wait=0,
                           stable_reads=2, sleep=lambda _s: None)  # fmt: skip
    bed = _Recorder(ledger)
    bed.prepare(CAT.by_id("pg-direct"))  # first window: starts the pool (touch), fresh baseline 0, 0
    bed.prepare(CAT.by_id("pg-socket"))  # same state: closes pg-direct at 4, 4 and opens from it
    assert len(reads) == 4
    bed.prepare(CAT.by_id("pg-direct"))  # closes pg-socket at 9, 9, reuses it
    bed.close_session_window()  # before the harness's own psql (9, 9): the next window reads afresh
    bed.prepare(CAT.by_id("pg-socket"))  # fresh baseline 15, 15
    assert len(reads) == 10
    tallies = {k: v["sessions"] for k, v in ledger.tallies.items()}
    assert tallies == {"pg-direct": 4 + 0, "pg-socket": 5}  # pg-direct: 0 -> 4, then 9 -> 9
