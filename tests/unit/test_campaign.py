from __future__ import annotations

import math
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from coldstart_bench.catalogue import by_id
from coldstart_bench.measure.executor import validate
from coldstart_bench.plan import interleaved_order, rounds_for
from coldstart_bench.samples import Sample


def _sample(scenario: str, i: int, **kw: object) -> Sample:
    base = dict(mode="direct", container_id=f"c{scenario}{i}", ok=True, connect_us=500.0, lifecycle_ms=300.0)
    base.update(kw)
    return Sample(scenario=scenario, iteration=i, **base)  # type: ignore[arg-type]


def test_same_seed_gives_same_order_and_other_seed_differs() -> None:
    ids = ["socket", "direct", "direct-10ms", "direct-50ms", "direct-100ms"]
    a = interleaved_order(ids, 20, 5, seed=7)
    b = interleaved_order(ids, 20, 5, seed=7)
    c = interleaved_order(ids, 20, 5, seed=8)
    assert a == b
    assert [blk.scenario for blk in a] != [blk.scenario for blk in c]


@given(
    n_scen=st.integers(1, 6),
    iterations=st.integers(1, 40),
    block=st.integers(1, 10),
    seed=st.integers(0, 2**31),
)
def test_every_scenario_gets_exactly_its_iterations_once_per_round(
    n_scen: int, iterations: int, block: int, seed: int
) -> None:
    ids = [f"s{i}" for i in range(n_scen)]
    order = interleaved_order(ids, iterations, block, seed)
    totals: Counter[str] = Counter()
    for blk in order:
        totals[blk.scenario] += blk.count
        assert 1 <= blk.count <= block
    assert totals == dict.fromkeys(ids, iterations)
    # complete blocks: each round index holds each scenario exactly once
    by_round: dict[int, list[str]] = {}
    for blk in order:
        by_round.setdefault(blk.index, []).append(blk.scenario)
    assert all(sorted(v) == sorted(ids) for v in by_round.values())


def test_bursts_get_fewer_rounds_and_drop_out_when_done() -> None:
    ids = ["direct", "burst-8-direct"]
    order = interleaved_order(ids, 20, 5, seed=3, rounds={"burst-8-direct": 3})
    totals: Counter[str] = Counter()
    for blk in order:
        totals[blk.scenario] += blk.count
    assert totals == {"direct": 20, "burst-8-direct": 3}
    assert [b.scenario for b in order if b.index >= 1].count("burst-8-direct") == 0


def test_rounds_for_bursts_cover_the_iterations() -> None:
    assert rounds_for(by_id("socket"), 20) == 20
    assert rounds_for(by_id("burst-8-direct"), 20) == 3
    assert rounds_for(by_id("burst-4-socket-nonet"), 20) == 5


def test_validate_accepts_a_clean_run() -> None:
    samples = [_sample("direct", i) for i in range(5)]
    for s in samples:
        s.path = "direct"
    assert validate(by_id("direct"), samples) == []


def test_validate_flags_failures_duplicates_and_wrong_path() -> None:
    samples = [_sample("socket", i, path="socket", mode="socket") for i in range(4)]
    samples[1].ok = False
    samples[1].error = "echo mismatch"
    samples[3].container_id = samples[2].container_id
    samples[2].path = "fallback"
    problems = validate(by_id("socket"), samples, pool_status="exited with code 137")
    text = "\n".join(problems)
    assert "echo mismatch" in text
    assert "not distinct" in text
    assert "'fallback'" in text and "137" in text


def test_validate_says_delay_not_in_effect() -> None:
    samples = [_sample("direct-50ms", i, path="direct", connect_us=900.0, delay_ms=50.0) for i in range(5)]
    problems = validate(by_id("direct-50ms"), samples)
    assert any("delay not in effect" in p for p in problems)
    for s in samples:
        s.connect_us = 50_800.0
    assert validate(by_id("direct-50ms"), samples) == []


def test_validate_nonet_requires_loopback_only() -> None:
    scen = by_id("socket-nonet")
    good = [_sample("socket-nonet", 0, path="socket", interfaces="lo")]
    bad = [_sample("socket-nonet", 1, path="socket", interfaces="lo;eth0")]
    assert validate(scen, good) == []
    assert any("eth0" in p for p in validate(scen, bad))


def test_fallback_scenario_expects_the_fallback_path() -> None:
    scen = by_id("fallback")
    assert (scen.id, scen.mode, scen.pool_up, scen.expect_path, scen.path) == (
        "fallback",
        "socket",
        False,
        "fallback",
        "fallback",
    )
    ok = [_sample("fallback", 0, path="fallback", connect_us=math.nan)]
    assert validate(scen, ok) == []
