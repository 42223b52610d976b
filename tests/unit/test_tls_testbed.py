"""The TLS family's harness side without Docker: session accounting, the TLS sample checks and the
thesis's Table 1 computed from samples."""

from __future__ import annotations

import math
from typing import Any

import pytest

from coldstart_bench.analyse.tls_connect import tls_connect_table
from coldstart_bench.catalogue import default_catalogue
from coldstart_bench.measure import tls_testbed
from coldstart_bench.measure.executor import validate
from coldstart_bench.measure.tls_testbed import PoolTally, TlsCounts, check_sessions
from coldstart_bench.samples import Sample


class _Tls:
    """What check_sessions reads of a TlsTestbed (no certificates made)."""

    def __init__(self) -> None:
        self.tally = PoolTally()
        self.counts = TlsCounts()
        self.backend_sessions_before = 0


def test_cold_starts_are_counted_by_what_they_did() -> None:
    counts = TlsCounts()
    counts.count("direct", [{"tls_handshake_us": 900.0}, None, {"tls_handshake_us": None}])
    counts.count("socket", [{"pool_id": 7}, {"pool_id": None}, {"pool_id": 8, "tls_handshake_us": 1.0}])
    # a socket-mode function that fell back handshook itself: both are counted
    assert (counts.cold_starts, counts.direct_handshakes, counts.socket_received) == (6, 2, 2)


def test_the_session_count_holds_across_manager_lifetimes() -> None:
    tls: Any = _Tls()
    tls.backend_sessions_before = 5
    tls.counts.count("direct", [{"tls_handshake_us": 1.0}] * 3)
    tls.counts.count("socket", [{"pool_id": i} for i in range(4)])
    tls.tally.add({"refills": 10, "handed_out": 1, "discards": 2})  # an earlier manager, stopped
    live = {"refills": 16, "handed_out": 3, "discards": 0, "idle": 13}
    record, problems = check_sessions(tls, 5 + 3 + 26, live)
    assert problems == [] and record["holds"] is True
    assert record["manager_opened"] == 26 and record["manager_handed_out"] == 4


@pytest.mark.parametrize(
    ("backend", "handed", "needle"),
    [(34 + 1, 3, "accepted 30 sessions"), (34, 2, "handed out 2 TLS sessions but 4")],
)
def test_a_session_too_many_or_too_few_fails(backend: int, handed: int, needle: str) -> None:
    tls: Any = _Tls()
    tls.backend_sessions_before = 5
    tls.counts.count("direct", [{"tls_handshake_us": 1.0}] * 3)
    tls.counts.count("socket", [{"pool_id": i} for i in range(4)])
    live = {"refills": 26, "handed_out": handed, "discards": 0, "idle": 22}
    record, problems = check_sessions(tls, backend, live)
    assert record["holds"] is False
    assert any(needle in p for p in problems), problems


def test_unreadable_counters_of_a_stopped_manager_fail_the_check() -> None:
    tls: Any = _Tls()
    tls.tally.errors.append("cannot read the pool manager's tls counters before stopping it: gone")
    _record, problems = check_sessions(tls, 0, None)
    assert problems and "cannot read" in problems[0]


def test_pool_stats_are_read_once_the_pool_is_settled() -> None:
    readings = iter(
        [
            {"pools": {"tls": {"idle": 3, "size": 4, "connecting": 1, "refills": 7}}},
            {"pools": {"tls": {"idle": 4, "size": 4, "connecting": 0, "refills": 8}}},
        ]
    )
    assert tls_testbed.settled_pool_stats(lambda: next(readings), timeout=10)["refills"] == 8


def test_backend_counter_is_the_stats_line_after_the_signal() -> None:
    class Container:
        def __init__(self) -> None:
            self.lines = [b'{"event": "ready"}', b'{"event": "stats", "tls_sessions": 2}']
            self.signals: list[str] = []

        def logs(self, stdout: bool, stderr: bool) -> bytes:
            return b"\n".join(self.lines)

        def kill(self, signal: str) -> None:
            self.signals.append(signal)
            self.lines.append(b'{"event": "stats", "tls_sessions": 9, "open": 1}')

    c = Container()
    assert tls_testbed.read_backend_sessions(c) == 9 and c.signals == ["SIGUSR1"]


def _sample(scenario: str, mode: str, **kw: Any) -> Sample:
    base: dict[str, Any] = {"scenario": scenario, "iteration": 0, "mode": mode, "container_id": kw.pop("cid", "c"),
                            "ok": True, "path": mode, "tls_version": "TLSv1.3"}  # fmt: skip
    return Sample(**(base | kw))


def test_tls_samples_must_have_gone_through_tls_13() -> None:
    cat = default_catalogue()
    socket = cat.by_id("tls-socket")
    good = [_sample("tls-socket", "socket", cid=f"c{i}", tls_path="record_layer") for i in range(2)]
    assert validate(socket, good) == []
    plain = [*good, _sample("tls-socket", "socket", cid="c9", tls_path="", tls_version="")]
    assert any("did not echo over TLS 1.3" in p for p in validate(socket, plain))
    direct = cat.by_id("tls-direct")
    assert any(
        "did not echo" in p for p in validate(direct, [_sample("tls-direct", "direct", tls_path="record_layer")])
    )


def test_table1_from_the_tls_direct_samples() -> None:
    cat = default_catalogue()
    rows = [
        _sample(
            "tls-direct", "direct", cid=f"d{i}", handshake_us=500.0 + i, tls_handshake_us=4000.0, tls_path="handshake"
        )
        for i in range(5)
    ]
    rows += [_sample("tls-socket", "socket", cid=f"s{i}", fd_recv_us=800.0, tls_setup_us=3000.0) for i in range(3)]
    table = tls_connect_table(rows, cat)
    assert table is not None
    t1 = table["table1"]
    assert t1["tcp_connect_us"]["scenarios"] == ["tls-direct"]  # no plain direct in this run
    assert t1["tcp_connect_us"]["mean"] == pytest.approx(502.0)
    assert t1["tls13_connect_us"]["mean"] == pytest.approx(4502.0)
    assert t1["tls_over_tcp_mean"] == pytest.approx(4502.0 / 502.0)
    assert table["injected_phases_us"]["tls_setup_us"]["median"] == 3000.0
    # with the thesis's own direct scenario present, TCP comes from it
    rows.append(_sample("direct", "direct", cid="x", handshake_us=700.0))
    assert tls_connect_table(rows, cat)["table1"]["tcp_connect_us"]["scenarios"] == ["direct"]  # type: ignore[index]
    assert tls_connect_table([_sample("direct", "direct", handshake_us=1.0)], cat) is None
    assert math.isfinite(t1["thesis"]["tls_over_tcp_mean"])
