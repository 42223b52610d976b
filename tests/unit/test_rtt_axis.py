"""The round-trip-time axis (--bench-rtt): naming and parsing, the variants the catalogue makes,
the sidecar's commands for delaying every packet, and the round trips the report counts."""

from __future__ import annotations

import pytest

from coldstart_bench.analyse.round_trips import round_trip_rows
from coldstart_bench.catalogue import (
    RTT_FAMILY,
    default_catalogue,
    parse_rtts,
    rtt_id,
    rtt_label,
)
from coldstart_bench.samples import Sample
from components import synack_delay as sd


@pytest.mark.parametrize(
    ("text", "rtts"),
    [("1ms,10ms", (1.0, 10.0)), ("10", (10.0,)), ("0.5ms, 2ms", (0.5, 2.0)), ("", ()), ("5ms,5", (5.0,))],
)
def test_parse_rtts(text: str, rtts: tuple[float, ...]) -> None:
    assert parse_rtts(text) == rtts


@pytest.mark.parametrize("text", ["ten", "0ms", "-1ms", "2000ms", "1s"])
def test_parse_rtts_rejects_clearly(text: str) -> None:
    with pytest.raises(ValueError, match="--bench-rtt"):
        parse_rtts(text)


def test_rtt_names() -> None:
    assert rtt_label(10.0) == "10ms" and rtt_label(0.5) == "0.5ms"
    assert rtt_id("pg-tls-direct", 10) == "pg-tls-direct-rtt-10ms"


def test_variants_of_the_direct_and_injected_arms() -> None:
    assert default_catalogue().family(RTT_FAMILY) == []  # none without --bench-rtt
    cat = default_catalogue(rtts=(1.0, 10.0))
    ids = [s.id for s in cat.family(RTT_FAMILY)]
    for arm in ("direct", "socket", "pg-direct", "pg-socket", "pg-tls-direct", "pg-tls-socket", "pg-tls-relay"):
        assert f"{arm}-rtt-1ms" in ids and f"{arm}-rtt-10ms" in ids
    assert len(ids) == 14
    variant = cat.by_id("pg-tls-socket-rtt-10ms")
    base = cat.by_id("pg-tls-socket")
    assert (variant.rtt_ms, variant.delay_ms, variant.backend, variant.transport, variant.mode) == (
        10.0,
        0.0,
        base.backend,
        base.transport,
        base.mode,
    )
    refs = {r.scenario: r for r in variant.references}
    assert refs["pg-tls-socket"].pulled and refs["pg-tls-direct-rtt-10ms"].headline
    # Selecting one variant brings what it is read against: the arm without distance, the direct twin.
    pulled = {s.id for s in cat.pulled_in(["pg-tls-socket-rtt-10ms"])}
    assert {"pg-tls-socket", "pg-tls-direct-rtt-10ms", "pg-tls-direct"} <= pulled
    # A stored run's variant id resolves without the option.
    assert default_catalogue().by_id("socket-rtt-3ms").rtt_ms == 3.0


def test_sidecar_delays_every_segment_from_the_port_in_scope_all() -> None:
    synack = sd.netem_setup_commands("eth0", 5432, 10)
    every = sd.netem_setup_commands("eth0", 5432, 10, scope="all")
    assert hex(0x12) in synack[2] and hex(0x12) not in every[2]
    assert every[2][every[2].index("u16") + 1] == "5432"
    assert "--tcp-flags" in sd.nfqueue_rule(5432, 0) and "--tcp-flags" not in sd.nfqueue_rule(5432, 0, "all")
    assert sd.nfqueue_teardown_commands(5432, 0, "iptables", "all")[0][3] == "-D"


def test_sidecar_command_carries_the_scope() -> None:
    from coldstart_bench.measure.delay import SynAckDelay

    d = SynAckDelay(None, "img", "cid", 5432, 10, scope="all")  # type: ignore[arg-type]
    assert d.command()[-2:] == ["--scope", "all"]
    with pytest.raises(ValueError, match="scope"):
        SynAckDelay(None, "img", "cid", 5432, 10, scope="some")  # type: ignore[arg-type]


def _s(scenario: str, connect_us: float, i: int) -> Sample:
    return Sample(scenario=scenario, iteration=i, mode="direct", container_id=f"c{i}", ok=True, connect_us=connect_us)


def test_round_trips_counted_per_variant() -> None:
    cat = default_catalogue(rtts=(10.0,))
    samples = [_s("pg-tls-direct", 20_000 + i, i) for i in range(3)]
    samples += [_s("pg-tls-direct-rtt-10ms", 81_000 + i, i) for i in range(3)]
    samples += [_s("pg-tls-socket-rtt-10ms", 3_000 + i, i) for i in range(3)]
    rows = {r["scenario"]: r for r in round_trip_rows(samples, cat)}
    assert set(rows) == {"pg-tls-direct-rtt-10ms", "pg-tls-socket-rtt-10ms"}
    direct = rows["pg-tls-direct-rtt-10ms"]
    assert direct["round_trips"] == 8 and direct["added_us"] == 61_000.0 and direct["added_round_trips"] == 6.1
    injected = rows["pg-tls-socket-rtt-10ms"]
    assert injected["round_trips"] == 0 and injected["added_us"] is None  # its arm did not run
