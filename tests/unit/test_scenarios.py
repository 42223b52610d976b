from __future__ import annotations

import pytest

from coldstart_bench.catalogue import all_scenarios, by_id, parse_burst_sizes


def test_thesis_ids_are_exact() -> None:
    ids = [s.id for s in all_scenarios()]
    for sid in ("socket", "direct", "direct-10ms", "direct-50ms", "direct-100ms", "socket-nonet",
                "socket-100ms", "fallback", "socket-return", "pg-direct", "pg-socket",
                "pg-socket-nonet", "pg-direct-10ms", "burst-8-direct", "burst-1-socket-nonet"):  # fmt: skip
        assert sid in ids
    assert len(ids) == len(set(ids))


def test_delays_and_networks() -> None:
    assert by_id("direct-50ms").delay_ms == 50
    assert by_id("socket-100ms").mode == "socket" and by_id("socket-100ms").delay_ms == 100
    assert by_id("socket-nonet").network == "none"
    assert by_id("burst-16-direct", (1, 2)).burst == 16


def test_unknown_scenario_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="unknown scenario 'nope'"):
        by_id("nope")


@pytest.mark.parametrize("text", ["", "a,b", "0", "1,100", "-2"])
def test_bad_burst_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="--bench-bursts"):
        parse_burst_sizes(text)


def test_burst_sizes() -> None:
    assert parse_burst_sizes("1, 2,4") == (1, 2, 4)
