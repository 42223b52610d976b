"""Fewer wasted cold starts: the grouped, seeded order; the switch that opens each block; warm-ups
only after the switches asked for; the warm-up evidence and the wall/lifecycle ratio computed from
samples; the connect breakdown of socket scenarios in summary.json and the report."""

from __future__ import annotations

import itertools
import math
import random
import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coldstart_bench.analyse.harness_time import arm_phases, connect_breakdown, harness_time, warmup_evidence
from coldstart_bench.analyse.report.content import build_document
from coldstart_bench.analyse.report.markdown import render as render_markdown
from coldstart_bench.analyse.report.terminal import harness_time_lines
from coldstart_bench.analyse.run import AnalysisConfig, analyse
from coldstart_bench.catalogue import Scenario, default_catalogue
from coldstart_bench.measure.executor import CampaignTiming, Executor, round_span_s
from coldstart_bench.plan import (
    DEFAULT_WARMUP_AFTER,
    SWITCH_KINDS,
    PlanSettings,
    interleaved_order,
    parse_warmup_after,
    plan,
    state_group,
    switch_between,
)
from coldstart_bench.samples import ACQUIRE_PHASES, Sample
from tests.unit.test_plan_executor import FakeRunner, FakeTestbed

CAT = default_catalogue((1,))
MIXED = ["socket", "direct", "direct-aa", "socket-nonet", "fallback", "direct-10ms", "direct-100ms", "socket-100ms"]


def _scenarios(ids: list[str]) -> list[Scenario]:
    return [CAT.by_id(i) for i in ids]


def _runs_of_groups(order: list[str]) -> int:
    """How many maximal runs of equal testbed state the order has."""
    keys = [state_group(CAT.by_id(s))[0] for s in order]
    return sum(1 for i, k in enumerate(keys) if i == 0 or k != keys[i - 1])


def test_grouped_order_is_seeded_and_keeps_equal_states_together() -> None:
    groups = {s.id: state_group(s) for s in _scenarios(MIXED)}
    a = interleaved_order(MIXED, 20, 5, seed=7, group_of=groups)
    assert a == interleaved_order(MIXED, 20, 5, seed=7, group_of=groups)
    assert [b.scenario for b in a] != [b.scenario for b in interleaved_order(MIXED, 20, 5, seed=8, group_of=groups)]
    distinct_states = len({g[0] for g in groups.values()})
    for index in range(4):
        order = [b.scenario for b in a if b.index == index]
        assert sorted(order) == sorted(MIXED)  # complete rounds, as before
        assert _runs_of_groups(order) == distinct_states  # each testbed state once per round
        # within the echo/no-delay/pool-up group, the two networks are not interleaved either
        bridge_none = [CAT.by_id(s).network for s in order if state_group(CAT.by_id(s))[0] == ("echo", 0.0, True)]
        assert sum(1 for i, n in enumerate(bridge_none) if i == 0 or n != bridge_none[i - 1]) == 2
    # a round opens with the testbed state (and network) the previous one ended with: one switch saved per round
    for prev, nxt in itertools.pairwise(a):
        if nxt.index == prev.index + 1:
            assert state_group(CAT.by_id(nxt.scenario)) == state_group(CAT.by_id(prev.scenario))
    assert _runs_of_groups([b.scenario for b in a]) == 4 * distinct_states - 3


def test_grouped_order_still_randomises_positions_within_and_across_groups() -> None:
    """No arm is pinned to a position: over many rounds each member of a group leads it sometimes,
    and the group order changes (what keeps drift from masquerading as an effect)."""
    groups = {s.id: state_group(s) for s in _scenarios(MIXED)}
    order = interleaved_order(MIXED, 200, 1, seed=3, group_of=groups)
    rounds: dict[int, list[str]] = {}
    for b in order:
        rounds.setdefault(b.index, []).append(b.scenario)
    first_of_round = Counter(r[0] for r in rounds.values())
    assert len(first_of_round) >= 6  # many different scenarios open a round
    echo_group = ("socket", "direct", "direct-aa")
    leaders = Counter(next(s for s in r if s in echo_group) for r in rounds.values())
    assert set(leaders) == set(echo_group) and min(leaders.values()) > 30


def test_switch_kinds_between_blocks() -> None:
    socket, direct, nonet, fallback, d10 = _scenarios(["socket", "direct", "socket-nonet", "fallback", "direct-10ms"])
    assert switch_between(None, socket, set()) == ("start",)
    assert switch_between(socket, direct, {"socket", "direct"}) == ("scenario",)
    assert switch_between(socket, socket, {"socket"}) == ()
    assert switch_between(socket, nonet, {"socket"}) == ("first", "network")
    assert switch_between(direct, fallback, {"fallback"}) == ("pool",)
    assert switch_between(fallback, d10, {"d10", "direct-10ms"}) == ("delay", "pool")
    pg = CAT.by_id("pg-direct")
    assert switch_between(direct, pg, {"pg-direct"}) == ("backend",)


def test_warmups_only_after_the_switches_asked_for() -> None:
    scenarios = _scenarios(["socket", "direct", "fallback"])
    default = plan(PlanSettings(10, warmup=1, block_size=5, block_warmup=1, seed=5), scenarios)
    for b in default.blocks:
        wanted = set(b.switch) & DEFAULT_WARMUP_AFTER
        assert b.warmup == (1 if wanted else 0), b
    # fallback is alone on its state: each of its later blocks opens with a pool switch, or continues
    # itself across a round boundary (no switch at all). Warm-ups follow the policy asked for.
    pool_too = plan(PlanSettings(25, 1, True, 5, 1, 5, warmup_after=parse_warmup_after("first,pool")), scenarios)
    for run_plan, expected in ((default, 0), (pool_too, 1)):
        later = [(prev, b) for prev, b in itertools.pairwise(run_plan.blocks)
                 if b.scenario == "fallback" and "first" not in b.switch]  # fmt: skip
        assert later
        for prev, b in later:
            if prev.scenario == "fallback":
                assert b.switch == () and b.warmup == 0
            else:
                assert "pool" in b.switch and b.warmup == expected, (b, expected)
    assert default.blocks[0].switch == ("start",) and default.blocks[0].warmup == 1
    none = plan(PlanSettings(10, warmup=1, block_size=5, block_warmup=1, seed=5, warmup_after=frozenset({"start"})),
                scenarios)  # fmt: skip
    assert [b.warmup for b in none.blocks] == [1] + [0] * (len(none.blocks) - 1)
    assert none.to_dict()["switches"][0] == ["start"] and none.to_dict()["warmup_after"] == ["start"]
    ungrouped = plan(PlanSettings(10, 1, True, 5, 1, 5, group_by_state=False), scenarios)
    assert ungrouped.to_dict()["group_by_state"] is False


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), iterations=st.integers(1, 30))
def test_grouped_plan_switches_the_testbed_at_most_once_per_state_per_round(seed: int, iterations: int) -> None:
    scenarios = _scenarios(MIXED)

    def testbed_switches(grouped: bool) -> int:
        p = plan(PlanSettings(iterations, 1, True, 5, 1, seed, group_by_state=grouped), scenarios)
        return sum(1 for b in p.blocks if {"delay", "pool", "backend"} & set(b.switch))

    # per round a grouped order switches the testbed once per state change: at most states - 1 + 1
    p = plan(PlanSettings(iterations, 1, True, 5, 1, seed), scenarios)
    states = len({state_group(s)[0] for s in scenarios})
    assert testbed_switches(True) <= len(list(p.rounds())) * states


def test_parse_warmup_after() -> None:
    assert parse_warmup_after("delay, pool") == {"start", "delay", "pool"}
    assert parse_warmup_after("all") == set(SWITCH_KINDS)
    assert parse_warmup_after("none") == {"start"}
    with pytest.raises(ValueError, match="--bench-warmup-after"):
        parse_warmup_after("delay,sidecar")


def _block_samples(scenario: str, block: int, lifecycles: list[float], switch: str, t0: int = 0) -> list[Sample]:
    out = []
    t = t0
    for pos, life in enumerate(lifecycles):
        out.append(Sample(scenario, block * 10 + pos, "direct", f"{scenario}{block}{pos}", True, lifecycle_ms=life,
                          block=block, position=pos, after_switch=switch, t_create_ns=t))  # fmt: skip
        t += int((life + 20.0) * 1e6)  # 20 ms between one destroy and the next create
    return out


def test_warmup_evidence_flags_a_switch_whose_first_start_is_slower() -> None:
    rng = random.Random(1)
    samples: list[Sample] = []
    for block in range(8):
        base = [400.0 + rng.uniform(-5, 5) for _ in range(5)]
        slow_first = [base[0] + 60.0, *base[1:]]
        samples += _block_samples("fallback", block, slow_first, "pool")
        samples += _block_samples("direct", block, base, "scenario")
    evidence = warmup_evidence(samples)
    assert evidence["pool"]["perturbs"] and evidence["pool"]["blocks"] == 8
    assert evidence["pool"]["median_excess_ms"] == pytest.approx(60.0, abs=12.0)
    assert evidence["pool"]["first_position"] == [0]
    assert not evidence["scenario"]["perturbs"]
    # too few blocks: no verdict, whatever the difference
    few = warmup_evidence([s for s in samples if s.block < 3])
    assert not few["pool"]["perturbs"] and few["pool"]["wilcoxon_greater_p"] is None


def test_harness_time_ratio_gaps_and_terminal_line() -> None:
    samples = _block_samples("direct", 0, [400.0] * 5, "start")
    timing = CampaignTiming(wall_s=2.5, measured_s=2.0, warmup_s=0.4, measured_starts=5, warmup_starts=1, blocks=1)
    timing.add_prepare(("start",), 0.05)
    plan_record = {"warmup_after": ["start"], "block_warmup": 1, "group_by_state": True, "switches": [["start"]]}
    spent = harness_time(samples, {"campaign_timing": timing.to_dict()}, plan_record)
    assert spent["wall_lifecycle_ratio"] == pytest.approx(1.25)
    assert spent["harness_s"] == pytest.approx(0.05)
    assert spent["gap_between_starts_ms_median"] == pytest.approx(20.0, abs=0.01)
    line = harness_time_lines(spent)[0]
    assert line.startswith("wall/lifecycle: 1.25x")
    assert harness_time([], {}, None) == {}


def test_executor_times_its_blocks_and_marks_position_and_switch() -> None:
    scenarios = _scenarios(["socket", "direct", "fallback"])
    p = plan(PlanSettings(4, warmup=1, block_size=2, block_warmup=1, seed=2), scenarios)
    timing = CampaignTiming()
    ex = Executor(p, FakeTestbed(), FakeRunner(_ids=itertools.count(1)), timing=timing)
    out = ex.run()
    measured = [s for v in out.values() for s in v]
    assert timing.measured_starts == len(measured) == 12
    assert timing.warmup_starts == sum(b.warmup for b in p.blocks)
    # the fake runner's lifecycle is 0.4 s (create -> destroy)
    assert timing.measured_s == pytest.approx(0.4 * 12) and timing.warmup_s == pytest.approx(0.4 * timing.warmup_starts)
    assert timing.wall_s > 0 and timing.blocks == len(p.blocks)
    for b in p.blocks:
        in_block = sorted(s.position for s in out[b.scenario] if s.block == b.index)
        assert in_block == list(range(b.warmup, b.warmup + b.count))
        assert all(s.after_switch == ";".join(b.switch) for s in out[b.scenario] if s.block == b.index)
    assert round_span_s([]) == 0.0


class _SlowPoolSwitch(FakeTestbed):
    """Preparing the pool-less scenario costs time, as stopping a real pool manager does."""

    def prepare(self, scenario: Scenario) -> None:
        super().prepare(scenario)
        if scenario.id == "fallback":
            time.sleep(0.03)


def test_testbed_switch_time_is_named_by_what_opened_the_block() -> None:
    scenarios = _scenarios(["socket", "direct", "fallback"])
    p = plan(PlanSettings(4, warmup=0, block_size=2, block_warmup=0, seed=3), scenarios)
    timing = CampaignTiming()
    Executor(p, _SlowPoolSwitch(), FakeRunner(_ids=itertools.count(1)), timing=timing).run()
    recorded = timing.to_dict()["prepare_by_switch"]
    opened = Counter("+".join(b.switch) or "none" for b in p.blocks)
    assert {k: e["blocks"] for k, e in recorded.items()} == dict(opened)
    assert sum(e["s"] for e in recorded.values()) == pytest.approx(timing.prepare_s, abs=0.005)
    slow = sorted({"+".join(b.switch) or "none" for b in p.blocks if b.scenario == "fallback"})
    assert slow and recorded[slow[0]]["max_s"] >= 0.03
    assert next(iter(recorded)) in slow  # most expensive first
    spent = harness_time([], {"campaign_timing": timing.to_dict()}, None)
    line = harness_time_lines(spent)[1]
    assert line.startswith("testbed switches by what opened the block") and slow[0] in line


def _socket_sample(i: int, recv: float) -> Sample:
    phases = dict(zip(ACQUIRE_PHASES, (50.0, 15.0, recv, 20.0, 8.0), strict=True))
    acquire = sum(phases.values()) + 20.0
    return Sample("socket", i, "socket", f"s{i}", True, connect_us=acquire + 80.0, lifecycle_ms=400.0,
                  path="socket", fd_check_us=80.0, protocol_import_us=300.0, prefetch_us=2800.0,
                  prefetch_bytes=8 * 2**20, acquire_us=acquire, verify_us=80.0, session_setup_us=0.0,
                  library_load_us=300.0, connection_total_us=acquire + 380.0, library="components.pool_acquire",
                  runtime_start_us=20_000.0 + i, **phases)  # fmt: skip


def test_connect_breakdown_in_summary_and_report() -> None:
    samples = [_socket_sample(i, 250.0 + i) for i in range(5)]
    samples += [Sample("direct", i, "direct", f"d{i}", True, connect_us=3000.0, lifecycle_ms=410.0, path="direct",
                       prefetch_us=2900.0, prefetch_bytes=9 * 2**20) for i in range(5)]  # fmt: skip
    breakdown = connect_breakdown(samples)
    sock = breakdown["socket"]
    assert sock["reply_recv_us"] == 252.0 and sock["acquire_other_us"] == pytest.approx(20.0)
    assert sock["reply_recv_share"] == pytest.approx(252.0 / 445.0)  # of connect_us, the fd check included
    assert "connect_us" not in breakdown["direct"] and breakdown["direct"]["prefetch_us"] == 2900.0
    analysis = analyse(samples, {}, AnalysisConfig(bootstrap_resamples=50))
    assert analysis.summary["connect_breakdown"]["socket"]["n"] == 5
    text = render_markdown(build_document(analysis.summary, []))
    assert "Where the injected connect goes" in text and "reply + fd receive" in text and "prefetch" in text
    # NaN phases (an older function image) leave the scenario out of the phase table
    old = [Sample("socket", i, "socket", f"o{i}", True, connect_us=600.0, lifecycle_ms=400.0, path="socket")
           for i in range(3)]  # fmt: skip
    assert connect_breakdown(old) == {}
    assert math.isnan(old[0].reply_recv_us)


def test_arm_phases_in_summary_and_report() -> None:
    samples = [_socket_sample(i, 250.0 + i) for i in range(5)]
    samples.append(Sample("socket", 9, "socket", "bad", False, connection_total_us=1.0))  # failed: left out
    samples += [
        Sample("direct", i, "direct", f"d{i}", True, connect_us=3000.0, lifecycle_ms=410.0, path="direct")
        for i in range(3)
    ]  # fmt: skip  (no phases reported: an older image, left out)
    phased = arm_phases(samples)
    assert set(phased) == {"socket"}
    sock = phased["socket"]
    assert sock["n"] == 5 and sock["library"] == "components.pool_acquire" and sock["runtime_start_us"] == 20_002.0
    assert sock["connection_total_us"] == pytest.approx(sock["library_load_us"] + sock["connect_us"])
    analysis = analyse(samples, {}, AnalysisConfig(bootstrap_resamples=50))
    assert analysis.summary["arm_phases"]["socket"]["verify_us"] == 80.0
    text = render_markdown(build_document(analysis.summary, []))
    assert "## Connection phases per arm" in text and "library + connect µs" in text


def test_no_prefetch_reaches_the_echo_function_of_every_mode() -> None:
    from types import SimpleNamespace

    from coldstart_bench.measure.testbed import Testbed, TestbedConfig

    images: Any = SimpleNamespace(function="fn-image", extra={})
    for prefetch in (True, False):
        bed = Testbed(client=None, images=images, run_id="r1", config=TestbedConfig(prefetch=prefetch))  # type: ignore[arg-type]
        for sid in ("socket", "direct", "fallback"):
            command = bed.function_spec(CAT.by_id(sid)).command
            assert ("--no-prefetch" in command) is (not prefetch), (sid, command)
