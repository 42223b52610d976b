"""Runs a campaign plan against a testbed and a runner and streams the samples. Knows nothing of
pytest: the plugin's harness adapts what happens here (skip, fail, pytest-benchmark)."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..catalogue import Scenario
from ..plan import Block, Plan
from ..samples import Sample
from .runner import ColdStartResult, FunctionSpec, to_sample

# Three failed cold starts in a scenario: something is broken, stop burning time on it.
MAX_FAILURES = 3


class Testbed(Protocol):
    """What the executor needs of a testbed (measure.testbed.Testbed is the real one)."""

    pg_cold_starts_ok: int

    def prepare(self, scenario: Scenario) -> None: ...

    def function_spec(self, scenario: Scenario) -> FunctionSpec: ...


class Runner(Protocol):
    """What the executor needs of a cold-start runner (measure.runner.ColdStartRunner)."""

    def run(self, spec: FunctionSpec) -> ColdStartResult: ...

    def run_burst(self, spec: FunctionSpec, n: int) -> list[ColdStartResult]: ...


class PrepareError(RuntimeError):
    """The testbed could not be brought into the state a scenario needs."""

    def __init__(self, scenario: Scenario, cause: BaseException) -> None:
        super().__init__(f"{scenario.id}: could not prepare the testbed: {cause}")
        self.scenario = scenario
        self.cause = cause


class StopPolicy(Protocol):
    """Decides after each round of blocks whether to stop, and at the end of the plan whether to add
    rounds (e.g. until a precision is reached or a time budget ends). `measured` holds every sample
    so far by scenario."""

    def stop_after_round(self, round_index: int, measured: Mapping[str, Sequence[Sample]]) -> bool: ...

    def more_rounds(self, plan: Plan, measured: Mapping[str, Sequence[Sample]]) -> list[Block]: ...


class RunThePlan:
    """The fixed design: every planned block, nothing more."""

    def stop_after_round(self, round_index: int, measured: Mapping[str, Sequence[Sample]]) -> bool:
        return False

    def more_rounds(self, plan: Plan, measured: Mapping[str, Sequence[Sample]]) -> list[Block]:
        return []


def _ignore(*_args: Any) -> None:
    return None


def round_span_s(samples: Sequence[Sample]) -> float:
    """Engine time one round of cold starts took: first create to last destroy (the lifecycle for a
    single start; the overlapping lifecycles' span for a burst). 0 when unknown."""
    ends = [s.t_create_ns + s.lifecycle_ms * 1e6 for s in samples if s.t_create_ns and math.isfinite(s.lifecycle_ms)]
    starts = [s.t_create_ns for s in samples if s.t_create_ns and math.isfinite(s.lifecycle_ms)]
    return (max(ends) - min(starts)) / 1e9 if starts else 0.0


@dataclass
class CampaignTiming:
    """Where the executor's wall time went: measured cold starts, warm-ups, testbed switches, and the
    rest (the harness between cold starts). The wall/lifecycle ratio is wall / measured."""

    wall_s: float = 0.0
    measured_s: float = 0.0  # sum over measured rounds of round_span_s
    warmup_s: float = 0.0  # the same for discarded warm-up rounds
    measured_starts: int = 0
    warmup_starts: int = 0
    blocks: int = 0
    unknown_rounds: int = 0  # rounds without lifecycle events: their time counts as harness time
    # Testbed.prepare (switching the testbed between blocks), by what opened the block
    # ("delay+pool", "scenario", ...): which switches cost.
    prepare_by_switch: dict[str, list[float]] = field(default_factory=dict)

    def add_prepare(self, switch: Sequence[str], seconds: float) -> None:
        self.prepare_by_switch.setdefault("+".join(switch) or "none", []).append(seconds)

    @property
    def prepare_s(self) -> float:
        return sum(sum(spans) for spans in self.prepare_by_switch.values())

    @property
    def harness_s(self) -> float:
        return max(0.0, self.wall_s - self.measured_s - self.warmup_s - self.prepare_s)

    @property
    def wall_lifecycle_ratio(self) -> float:
        return self.wall_s / self.measured_s if self.measured_s > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "wall_s": round(self.wall_s, 3),
            "measured_lifecycle_s": round(self.measured_s, 3),
            "warmup_lifecycle_s": round(self.warmup_s, 3),
            "prepare_s": round(self.prepare_s, 3),
            "harness_s": round(self.harness_s, 3),
            "measured_starts": self.measured_starts,
            "warmup_starts": self.warmup_starts,
            "blocks": self.blocks,
            "unknown_rounds": self.unknown_rounds,
            "wall_lifecycle_ratio": round(self.wall_lifecycle_ratio, 4) if self.measured_s > 0 else None,
            "prepare_by_switch": {
                kind: {"blocks": len(spans), "s": round(sum(spans), 3), "max_s": round(max(spans), 3)}
                for kind, spans in sorted(self.prepare_by_switch.items(), key=lambda kv: -sum(kv[1]))
            },
        }


def cold_start_samples(
    testbed: Testbed,
    runner: Runner,
    scenario: Scenario,
    iteration: int,
    block: int = 0,
    position: int = -1,
    after_switch: str = "",
) -> list[Sample]:
    """One round of a scenario: one cold start, or `burst` of them started at once."""
    spec = testbed.function_spec(scenario)
    results: list[ColdStartResult]
    results = runner.run_burst(spec, scenario.burst) if scenario.burst > 1 else [runner.run(spec)]
    if scenario.backend == "pg":
        # Each successful OLTP cold start, warm-ups included, commits one transfer: counted here,
        # where every cold start passes, for the database check after the scenario.
        testbed.pg_cold_starts_ok += sum(r.ok for r in results)
    observe = getattr(testbed, "observe_cold_starts", None)
    if observe is not None:  # the testbed's balances (hand-outs, server sessions) see every cold start
        observe(scenario, results)
    count = getattr(testbed, "count_cold_starts", None)
    if count is not None:  # a testbed that accounts per cold start (e.g. TLS sessions)
        count(scenario, [r.record for r in results])
    return [
        to_sample(
            r,
            scenario=scenario.id,
            iteration=iteration * scenario.burst + k,
            delay_ms=scenario.delay_ms,
            network=scenario.network,
            block=block,
            burst=scenario.burst,
            position=position,
            after_switch=after_switch,
            oci_runtime=scenario.runtime,
        )
        for k, r in enumerate(results)
    ]


def validate(scenario: Scenario, samples: Sequence[Sample], pool_status: str = "") -> list[str]:
    """Checks that make a run fail loudly instead of reporting numbers that mean nothing."""
    problems: list[str] = []
    failed = [s for s in samples if not s.ok]
    for s in failed[:5]:
        problems.append(f"cold start {s.iteration} ({s.container_id[:12]}) failed: {s.error}")
    if len(failed) > 5:
        problems.append(f"... and {len(failed) - 5} more failed cold starts")
    ids = [s.container_id for s in samples]
    if len(set(ids)) != len(ids):
        problems.append("the same container was measured twice: cold starts are not distinct")
    wrong_path = [s for s in samples if s.ok and s.path != scenario.path]
    if wrong_path:
        detail = f" (pool manager: {pool_status})" if pool_status and pool_status != "running" else ""
        problems.append(
            f"{len(wrong_path)} cold starts took path {wrong_path[0].path!r}, expected {scenario.path!r}{detail}"
        )
    if scenario.mode == "socket" and scenario.pool_up:
        # A relay scenario must have been relayed, an injected one injected: the paths differ in cost.
        want = "relay" if scenario.handoff == "relay" else "fd"
        wrong = [s for s in samples if s.ok and s.path == "socket" and s.handoff and s.handoff != want]
        if wrong:
            problems.append(f"{len(wrong)} cold starts got hand-off {wrong[0].handoff!r}, expected {want!r}")
    if scenario.network == "none":
        leaky = [s for s in samples if s.ok and set(filter(None, s.interfaces.split(";"))) - {"lo"}]
        if leaky:
            problems.append(f"function saw network interfaces {leaky[0].interfaces!r} with network_mode=none")
    if scenario.transport == "tls":
        # Every echo went through TLS 1.3: a handshake of the function's own, or the continued session.
        injected = {"relay"} if scenario.handoff == "relay" else {"record_layer", "ktls"}
        wanted = {"direct": {"handshake"}, "socket": injected}.get(scenario.path, {"handshake"})
        plain = [s for s in samples if s.ok and (s.tls_version != "TLSv1.3" or s.tls_path not in wanted)]
        if plain:
            problems.append(
                f"{len(plain)} cold starts did not echo over TLS 1.3 as expected ({sorted(wanted)}): "
                f"version {plain[0].tls_version!r}, path {plain[0].tls_path!r}"
            )
    ok_connect = [s.connect_us for s in samples if s.ok and s.connect_us == s.connect_us]
    if scenario.rtt_ms > 0 and scenario.mode == "direct" and ok_connect:
        # A direct connect pays at least the TCP handshake's round trip.
        median = statistics.median(ok_connect)
        if median < scenario.rtt_ms * 1000:
            problems.append(
                f"round-trip time not in effect: median connect_us {median:.0f} < configured {scenario.rtt_ms:g} ms"
            )
    if scenario.delay_ms > 0 and scenario.mode == "direct" and ok_connect:
        median = statistics.median(ok_connect)
        if median < scenario.delay_ms * 1000:
            problems.append(
                f"delay not in effect: median connect_us {median:.0f} < configured {scenario.delay_ms:.0f} ms"
            )
    return problems


class Executor:
    """Runs blocks of a plan. Callbacks: `on_sample` for every measured sample (at once, so a crash
    loses nothing), `on_progress(label, n)` for every cold start run (warm-ups included),
    `on_prepared(scenario)` after the testbed took a scenario's state, `on_planned(n)` when the stop
    policy adds cold starts to the plan."""

    def __init__(
        self,
        plan: Plan,
        testbed: Testbed,
        runner: Runner,
        *,
        on_sample: Callable[[Sample], None] = _ignore,
        on_progress: Callable[[str, int], None] = _ignore,
        on_prepared: Callable[[Scenario], None] = _ignore,
        on_planned: Callable[[int], None] = _ignore,
        stop_policy: StopPolicy | None = None,
        timing: CampaignTiming | None = None,
    ) -> None:
        self.plan = plan
        self.testbed = testbed
        self.runner = runner
        self.on_sample = on_sample
        self.on_progress = on_progress
        self.on_prepared = on_prepared
        self.on_planned = on_planned
        self.stop_policy: StopPolicy = stop_policy or RunThePlan()
        self.measured: dict[str, list[Sample]] = {}
        self.cold_starts = 0  # run so far, warm-ups included
        self.timing = timing if timing is not None else CampaignTiming()  # shared across executors of a run

    def _scenario(self, scenario_id: str) -> Scenario:
        return self.plan.scenario(scenario_id)

    def run_block(self, block: Block) -> list[Sample]:
        t_block = time.perf_counter()
        try:
            return self._run_block(block)
        finally:
            self.timing.wall_s += time.perf_counter() - t_block
            self.timing.blocks += 1

    def _run_block(self, block: Block) -> list[Sample]:
        scenario = self._scenario(block.scenario)
        timing = self.timing
        t_prepare = time.perf_counter()
        try:
            self.testbed.prepare(scenario)
        except Exception as exc:
            raise PrepareError(scenario, exc) from exc
        finally:
            timing.add_prepare(block.switch, time.perf_counter() - t_prepare)
        self.on_prepared(scenario)
        switch = ";".join(block.switch)
        for w in range(block.warmup):
            batch = cold_start_samples(self.testbed, self.runner, scenario, iteration=-1, position=w,
                                       after_switch=switch)  # fmt: skip
            span = round_span_s(batch)
            timing.warmup_s += span
            timing.unknown_rounds += span == 0.0
            timing.warmup_starts += len(batch)
            self.cold_starts += scenario.burst
            self.on_progress(f"{scenario.id} (warm-up)", scenario.burst)
        done = self.measured.setdefault(scenario.id, [])
        first = len(done) // max(scenario.burst, 1)
        measured: list[Sample] = []
        sample_block = block.index if self.plan.interleave else 0
        for r in range(block.count):
            batch = cold_start_samples(
                self.testbed, self.runner, scenario, iteration=first + r, block=sample_block,
                position=block.warmup + r, after_switch=switch,
            )  # fmt: skip
            span = round_span_s(batch)
            timing.measured_s += span
            timing.unknown_rounds += span == 0.0
            timing.measured_starts += len(batch)
            for sample in batch:
                self.on_sample(sample)
            measured.extend(batch)
            done.extend(batch)
            self.cold_starts += len(batch)
            self.on_progress(scenario.id, len(batch))
            if any(not s.ok for s in batch) and sum(not s.ok for s in measured) >= MAX_FAILURES:
                break  # something is broken: stop burning time, report what we have
        return measured

    def run_blocks(self, blocks: Iterable[Block]) -> dict[str, list[Sample]]:
        out: dict[str, list[Sample]] = {}
        for block in blocks:
            out.setdefault(block.scenario, []).extend(self.run_block(block))
        return out

    def run(self) -> dict[str, list[Sample]]:
        """Every round of the plan, asking the stop policy after each; then any rounds it adds."""
        out: dict[str, list[Sample]] = {sid: [] for sid in self.plan.ids}
        pending: Iterable[list[Block]] = self.plan.rounds()
        while True:
            for blocks in pending:
                for sid, samples in self.run_blocks(blocks).items():
                    out.setdefault(sid, []).extend(samples)
                if self.stop_policy.stop_after_round(blocks[0].index, self.measured):
                    return out
            extra = self.stop_policy.more_rounds(self.plan, self.measured)
            if not extra:
                return out
            self.plan.blocks.extend(extra)
            self.on_planned(sum(b.cold_starts for b in extra))
            pending = Plan(self.plan.scenarios, list(extra), interleave=self.plan.interleave).rounds()
