"""The stopping rule as the executor's StopPolicy, with a fake testbed and runner (no Docker): it adds
interleaved rounds until the headline comparison's confidence sequence is within the precision, or a
budget is spent, says why, and keeps the progress total exact."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from test_plan_executor import FakeRunner, FakeTestbed

from coldstart_bench.analyse.sequential import MAX_COLD_STARTS, MAX_TIME, PRECISION_REACHED, parse_stopping_options
from coldstart_bench.catalogue import default_catalogue
from coldstart_bench.measure.executor import Executor
from coldstart_bench.measure.runner import ColdStartResult, FunctionSpec
from coldstart_bench.plan import PlanSettings, plan
from coldstart_bench.progress import Progress
from coldstart_bench.stopping import Headline, PrecisionStopPolicy, headline_pairs

CAT = default_catalogue((1,))


class NoisyRunner(FakeRunner):
    """Lifecycles with a seeded spread, so the half-width shrinks with the blocks."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        import random

        self.rng = random.Random(seed)

    def _one(self, spec: FunctionSpec) -> ColdStartResult:
        r = super()._one(spec)
        extra = int(self.rng.gauss(0, 20) * 10**6)  # ± 20 ms on start→die
        events = dict(r.events)
        events["die"] += max(extra, -(10**8))
        events["destroy"] += max(extra, -(10**8))
        return ColdStartResult(r.container_id, r.exit_code, r.stdout, r.stderr, events, r.record)


def _clock(step: float) -> Iterator[float]:
    return (step * i for i in itertools.count())


def _run(options: tuple[str | None, str | None, int | None], runner: FakeRunner, clock_step: float = 0.0):
    run_plan = plan(PlanSettings(iterations=10, block_size=5, seed=7), [CAT.by_id("socket"), CAT.by_id("direct")])
    ticks = _clock(clock_step)
    lines: list[str] = []
    policy = PrecisionStopPolicy.from_options(
        parse_stopping_options(*options),
        headline_pairs(CAT, run_plan.ids),
        alpha=0.05,
        seed=7,
        block_size=5,
        block_warmup=1,
        write=lines.append,
        clock=lambda: next(ticks),
    )
    progress = Progress(run_plan.cold_starts, lambda _line: None)
    executor = Executor(
        run_plan,
        FakeTestbed(),
        runner,
        on_progress=progress.tick,
        on_planned=progress.add_planned,
        stop_policy=policy,
    )
    policy.start()
    executor.run()
    return policy, executor, progress, lines


def test_headline_pairs_come_from_the_catalogue() -> None:
    assert headline_pairs(CAT, ["socket", "direct", "direct-aa"]) == [Headline("socket", "direct")]
    assert headline_pairs(CAT, ["direct", "direct-aa"]) == []


def test_it_adds_rounds_until_the_precision_is_reached() -> None:
    runner = NoisyRunner(seed=1)
    policy, executor, progress, lines = _run(("10ms", "1h", None), runner)
    record = policy.record()
    assert record["stop_reason"] == PRECISION_REACHED and record["stopped"]
    assert record["reached"] == ["socket − direct lifecycle_ms"]
    status = record["comparisons"]["socket − direct lifecycle_ms"]
    assert status["half_width"] <= 10.0 and status["blocks"] >= 20  # no interval before min_blocks
    assert policy.rounds_added > 0 and record["headline"][0]["a"] == "socket"
    # The progress total grew with every added round and equals what ran.
    assert progress.total == progress.done == executor.cold_starts == runner.runs
    assert record["cold_starts"] == sum(len(v) for v in executor.measured.values())
    assert all("precision: socket − direct lifecycle_ms ±" in line for line in lines)
    assert "n/a" in lines[0] and "✓" in lines[-1] and lines[-1].endswith("stop: precision_reached")


def test_it_stops_before_a_round_would_overrun_the_time_budget() -> None:
    # Each clock read advances 1 s: a round looks like 1 s; the budget is 30 s.
    policy, _executor, _progress, _lines = _run(("0.1ms", "30s", None), NoisyRunner(seed=2), clock_step=1.0)
    record = policy.record()
    assert record["stop_reason"] == MAX_TIME and record["reached"] == []
    assert record["elapsed_s"] <= 30.0


def test_it_stops_at_the_cold_start_budget() -> None:
    policy, executor, _progress, _lines = _run(("0.1ms", None, 100), NoisyRunner(seed=3))
    record = policy.record()
    assert record["stop_reason"] == MAX_COLD_STARTS
    measured = sum(len(v) for v in executor.measured.values())
    assert 100 <= measured < 100 + 2 * 5  # the round that crossed the budget is the last


def test_a_precision_without_a_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="--bench-max-time"):
        parse_stopping_options("5%", None)
    with pytest.raises(ValueError, match="headline comparison"):
        PrecisionStopPolicy.from_options(
            parse_stopping_options("5%", "10m"), [], alpha=0.05, seed=1, block_size=5, block_warmup=1
        )
