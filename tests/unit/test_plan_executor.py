"""The campaign plan and the executor against a fake testbed and runner (plain objects, no Docker):
the progress total is the cold starts actually run, skips included; the order is seeded."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from coldstart_bench.catalogue import Scenario, default_catalogue
from coldstart_bench.harness import Harness
from coldstart_bench.measure.executor import Executor, PrepareError
from coldstart_bench.measure.runner import ColdStartResult, FunctionSpec
from coldstart_bench.options import BenchOptions, ExternalPg
from coldstart_bench.plan import SWITCH_KINDS, Block, Plan, PlanSettings, plan
from coldstart_bench.progress import Progress
from coldstart_bench.run_state import RunState
from coldstart_bench.samples import Sample

CAT = default_catalogue((1, 4))


@dataclass
class FakeRunner:
    runs: int = 0
    _ids: itertools.count = field(default_factory=itertools.count)

    def _one(self, spec: FunctionSpec) -> ColdStartResult:
        self.runs += 1
        mode = spec.command[spec.command.index("--mode") + 1]
        connect_us = 300.0 + 1000.0 * float(spec.labels.get("delay_ms", 0))  # the delay reaches the handshake
        record = {"ok": True, "mode": mode, "path": spec.labels.get("path", mode), "connect_us": connect_us}
        t = 1_000_000_000 * next(self._ids)
        events = {"create": t, "start": t + 10**8, "die": t + 3 * 10**8, "destroy": t + 4 * 10**8}
        return ColdStartResult(f"c{t}", 0, "", "", events, record)

    def run(self, spec: FunctionSpec) -> ColdStartResult:
        return self._one(spec)

    def run_burst(self, spec: FunctionSpec, n: int) -> list[ColdStartResult]:
        return [self._one(spec) for _ in range(n)]


@dataclass
class FakeTestbed:
    pg_cold_starts_ok: int = 0
    prepared: list[str] = field(default_factory=list)
    fail_on: str = ""

    def prepare(self, scenario: Scenario) -> None:
        if scenario.id == self.fail_on:
            raise RuntimeError("sidecar gone")
        self.prepared.append(scenario.id)

    def function_spec(self, scenario: Scenario) -> FunctionSpec:
        return FunctionSpec(
            "img",
            ["fn", "--mode", scenario.mode],
            "net",
            labels={"path": scenario.path, "delay_ms": str(scenario.delay_ms)},
        )


class FakeBenchmark:
    """What the harness uses of pytest-benchmark's fixture."""

    def __init__(self) -> None:
        self.extra_info: dict[str, Any] = {}
        self.rounds = 0

    def pedantic(self, target: Any, rounds: int, iterations: int) -> None:
        for _ in range(rounds * iterations):
            target()
            self.rounds += 1


def _options(tmp_path: Path, **kw: Any) -> BenchOptions:
    base: dict[str, Any] = dict(
        iterations=7,
        warmup=1,
        report_dir=tmp_path / "reports",
        interleave=True,
        seed=11,
        block_size=3,
        block_warmup=1,
        bursts=(1, 4),
        pool_size=4,
        gate_text="",
        baseline=None,
        save_baseline=None,
        max_regression_text="10%",
        expectation_policy="report",
        alpha=0.05,
    )
    base.update(kw)
    return BenchOptions(**base)


SELECTED = ["socket", "direct", "pg-direct", "pg-direct-10ms", "burst-4-direct"]


@pytest.mark.parametrize("interleave", [True, False])
@pytest.mark.parametrize("external_pg", [False, True])
def test_progress_total_equals_the_cold_starts_run(tmp_path: Path, interleave: bool, external_pg: bool) -> None:
    pg = ExternalPg("db", 5432, "u", "d", tmp_path / "pw") if external_pg else None
    opts = _options(tmp_path, interleave=interleave, pg_external=pg)
    run_plan = plan(PlanSettings(7, 1, interleave, 3, 1, 11, pg), [CAT.by_id(s) for s in SELECTED])
    lines: list[str] = []
    runner, testbed = FakeRunner(), FakeTestbed()
    harness = Harness(
        opts, RunState(tmp_path / "reports", "r1"), run_plan, lines.append, CAT, bring_up=lambda: (testbed, runner)
    )
    skipped = []
    for sid in SELECTED:
        try:
            harness.run(sid, benchmark=FakeBenchmark())
        except pytest.skip.Exception as exc:
            skipped.append((sid, str(exc)))
    assert harness.progress.total == run_plan.cold_starts == runner.runs == harness.progress.done
    if external_pg:  # the delayed pg scenario cannot run against the user's server: skipped, not counted
        assert [s for s, _ in skipped] == ["pg-direct-10ms"] and "--bench-pg-target" in skipped[0][1]
        assert run_plan.skip_reason("pg-direct-10ms") and "pg-direct-10ms" not in run_plan.ids
    else:
        assert skipped == []
    measured = {s.scenario for s in harness.state.samples}
    assert measured == set(run_plan.ids)
    assert sum(1 for s in harness.state.samples if s.scenario == "burst-4-direct") == 8  # ceil(7/4) rounds of 4


def test_a_scenario_no_test_selected_is_counted_when_measured(tmp_path: Path) -> None:
    run_plan = plan(PlanSettings(3, 1, True, 2, 1, 5), [CAT.by_id("socket")])
    runner = FakeRunner()
    harness = Harness(
        _options(tmp_path, iterations=3), RunState(tmp_path / "r", "r2"), run_plan, lambda _l: None, CAT,
        bring_up=lambda: (FakeTestbed(), runner),
    )  # fmt: skip
    harness.run("socket", FakeBenchmark())
    harness.run("direct", FakeBenchmark())
    assert harness.progress.total == runner.runs == harness.progress.done == run_plan.cold_starts + 4


def test_plan_counts_warmups_per_block_and_is_seeded() -> None:
    scenarios = [CAT.by_id(s) for s in ("socket", "direct", "burst-4-direct")]
    first = frozenset({"start", "first"})  # warm up each scenario's first block, as the thesis did
    a = plan(PlanSettings(iterations=10, warmup=2, block_size=3, block_warmup=1, seed=3, warmup_after=first), scenarios)
    b = plan(PlanSettings(iterations=10, warmup=2, block_size=3, block_warmup=1, seed=3, warmup_after=first), scenarios)
    c = plan(PlanSettings(iterations=10, warmup=2, block_size=3, block_warmup=1, seed=4, warmup_after=first), scenarios)
    assert a.blocks == b.blocks and a.blocks != c.blocks and a.seed == 3
    # socket: 10 rounds in blocks of 3 -> 4 blocks; all three share the testbed state, so later blocks
    # open with a "scenario" switch, which gets no warm-up by default: warm-ups 2 + 0 + 0 + 0
    assert [blk.warmup for blk in a.blocks_of("socket")] == [2, 0, 0, 0]
    every = plan(PlanSettings(10, 2, True, 3, 1, 3, warmup_after=frozenset(SWITCH_KINDS)), scenarios)
    # with every switch warmed up, only a block continuing the same scenario (no switch at all) has none
    assert [blk.warmup for blk in every.blocks_of("socket")][1:] == [
        int(bool(b.switch)) for b in every.blocks_of("socket")
    ][1:]
    # bursts: 3 rounds of 4 in one block, 2 warm-up rounds of 4
    (burst_block,) = a.blocks_of("burst-4-direct")
    assert (burst_block.index, burst_block.count, burst_block.warmup, burst_block.burst) == (0, 3, 2, 4)
    assert a.cold_starts == (10 + 2) + (10 + 2) + (3 + 2) * 4
    seq = plan(PlanSettings(iterations=10, warmup=2, interleave=False, warmup_after=first), scenarios)
    assert [(blk.scenario, blk.count, blk.warmup) for blk in seq.blocks] == [
        ("socket", 10, 2),
        ("direct", 10, 2),
        ("burst-4-direct", 3, 2),
    ]
    assert seq.seed is None and plan(PlanSettings(iterations=1), scenarios).seed is not None
    record = a.to_dict()
    assert record["cold_starts"] == a.cold_starts and record["order"][0][0] == 0 and record["skips"] == []


class StopAfterFirstRound:
    def stop_after_round(self, round_index: int, measured: Mapping[str, Sequence[Sample]]) -> bool:
        return round_index == 0

    def more_rounds(self, plan: Plan, measured: Mapping[str, Sequence[Sample]]) -> list[Block]:
        return []


class OneMoreRound:
    def __init__(self) -> None:
        self.asked = 0

    def stop_after_round(self, round_index: int, measured: Mapping[str, Sequence[Sample]]) -> bool:
        return False

    def more_rounds(self, plan: Plan, measured: Mapping[str, Sequence[Sample]]) -> list[Block]:
        self.asked += 1
        if self.asked > 1:
            return []
        last = plan.blocks[-1].index
        return [Block(last + 1, sid, 1, 1) for sid in plan.ids]


def test_stop_policy_can_end_early_or_add_rounds() -> None:
    scenarios = [CAT.by_id("socket"), CAT.by_id("direct")]
    p = plan(PlanSettings(iterations=6, warmup=0, block_size=2, block_warmup=0, seed=1), scenarios)
    runner = FakeRunner()
    progress = Progress(p.cold_starts, lambda _l: None)
    ex = Executor(p, FakeTestbed(), runner, on_progress=lambda label, n: progress.tick(label, n),
                  stop_policy=StopAfterFirstRound())  # fmt: skip
    out = ex.run()
    assert {k: len(v) for k, v in out.items()} == {"socket": 2, "direct": 2} and runner.runs == 4

    p2 = plan(PlanSettings(iterations=2, warmup=0, block_size=2, block_warmup=0, seed=1), scenarios)
    runner2, progress2 = FakeRunner(), Progress(p2.cold_starts, lambda _l: None)
    ex2 = Executor(p2, FakeTestbed(), runner2, on_progress=lambda label, n: progress2.tick(label, n),
                   on_planned=progress2.add_planned, stop_policy=OneMoreRound())  # fmt: skip
    out2 = ex2.run()
    assert {k: len(v) for k, v in out2.items()} == {"socket": 3, "direct": 3}
    assert runner2.runs == progress2.total == progress2.done == 4 + 2 * 2  # extra blocks: 1 warm-up + 1 measured
    assert [s.iteration for s in out2["socket"]] == [0, 1, 2]


def test_a_testbed_that_cannot_prepare_is_a_clear_error() -> None:
    p = plan(PlanSettings(iterations=1, warmup=0), [CAT.by_id("socket")])
    with pytest.raises(PrepareError, match="socket: could not prepare the testbed: sidecar gone"):
        Executor(p, FakeTestbed(fail_on="socket"), FakeRunner()).run()
