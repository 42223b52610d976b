"""What the benchmark tests call: the pytest side of a run. It brings up the testbed once, hands
the campaign plan to the executor, and adapts what comes back to pytest (skip, fail) and to
pytest-benchmark (one round per cold-start round, so its storage and compare see every scenario)."""

from __future__ import annotations

import math
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from .catalogue import Catalogue, Scenario, default_catalogue
from .measure import environment
from .measure.engine import EngineUnavailable, connect
from .measure.events import LifecycleEvents
from .measure.executor import Executor, PrepareError, Runner, StopPolicy, validate
from .measure.executor import Testbed as TestbedLike
from .measure.runner import ColdStartRunner
from .options import BenchOptions
from .plan import Plan, PlanSettings, plan_settings, single_scenario_plan, skip_reason
from .progress import Progress
from .run_state import RunState
from .samples import Sample

BringUp = Callable[[], tuple[TestbedLike, Runner]]


class LifecycleClock:
    """A timer for pytest-benchmark whose elapsed time across one round is that round's container
    lifecycle (docker `destroy - create`), not the harness's own wall time around the API calls."""

    __name__ = "docker-lifecycle"

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def new_run_id() -> str:
    return uuid.uuid4().hex[:10]


class Harness:
    def __init__(
        self,
        options: BenchOptions,
        state: RunState,
        plan: Plan,
        write: Callable[[str], None],
        catalogue: Catalogue | None = None,
        *,
        bring_up: BringUp | None = None,
        stop_policy: StopPolicy | None = None,
    ) -> None:
        self.options = options
        self.state = state
        self.plan = plan
        self.catalogue = catalogue or default_catalogue(options.bursts)
        self.write = write
        self.progress = Progress(plan.cold_starts, write)
        self.client: Any = None
        self.testbed: TestbedLike | None = None
        self.events: LifecycleEvents | None = None
        self.runner: Runner | None = None
        self._bring_up = bring_up or self._bring_up_docker
        self._stop_policy = stop_policy
        self._steal_start = environment.cpu_steal_ticks()
        self._executor: Executor | None = None
        self._interleaved: dict[str, list[Sample]] | None = None
        self._broken: str | None = None

    @property
    def settings(self) -> PlanSettings:
        return plan_settings(self.options)

    # --- bring-up / tear-down ----------------------------------------------------------------
    def _ensure_up(self) -> tuple[TestbedLike, Runner]:
        if self._broken:
            pytest.fail(self._broken, pytrace=False)
        if self.testbed is None or self.runner is None:
            self.testbed, self.runner = self._bring_up()
            self.progress.restart_clock()
            start = getattr(self._stop_policy, "start", None)
            if start is not None:  # a time budget counts measuring, not image builds
                start()
        return self.testbed, self.runner

    def _fail_broken(self, message: str) -> None:
        self._broken = message
        pytest.fail(message, pytrace=False)

    def _bring_up_docker(self) -> tuple[TestbedLike, Runner]:
        try:
            self.client = connect()
        except EngineUnavailable as exc:
            self._fail_broken(f"coldstart-bench: {exc}")
        # Docker-side modules load on first use, so unit tests and option errors never need them.
        from .measure.images import ImageBuildError, ensure_images
        from .measure.testbed import LABEL_RUN, Testbed, TestbedConfig, sweep

        try:
            images = ensure_images(self.client, log=lambda m: self.write(f"[coldstart-bench] {m}"))
        except ImageBuildError as exc:
            self._fail_broken(f"coldstart-bench: cannot build the images: {exc}")
        sweep(self.client)  # leftovers of runs whose process died (kill -9, power loss)
        env = self.state.environment
        env.update(environment.capture(self.client).to_dict())  # typed fields, read back by name
        env.base_image = images.base
        env.base_route = images.base_route
        env.run_id = self.state.run_id
        env.command = "pytest " + " ".join(sys.argv[1:])
        env.iterations = self.options.iterations
        env.warmup = self.options.warmup
        env.pool_size = self.options.pool_size
        self._install_sigterm()
        self.events = LifecycleEvents(self.client, f"{LABEL_RUN}={self.state.run_id}").start()
        runner = ColdStartRunner(self.client, self.events)
        testbed = Testbed(
            self.client,
            images,
            self.state.run_id,
            TestbedConfig(pool_size=self.options.pool_size, pg_external=self.options.pg_external),
        )
        try:
            testbed.start()
        except Exception as exc:
            try:
                testbed.close()
            finally:
                self._broken = f"coldstart-bench: the testbed did not come up: {exc}"
            pytest.fail(self._broken, pytrace=False)
        return testbed, runner

    @staticmethod
    def _install_sigterm() -> None:
        # A CI runner's SIGTERM should clean up like Ctrl-C does.
        if threading.current_thread() is threading.main_thread():

            def _raise(signum: int, frame: object) -> None:
                raise KeyboardInterrupt(f"signal {signum}")

            signal.signal(signal.SIGTERM, _raise)

    def close(self) -> None:
        try:
            testbed = self.testbed
            if testbed is not None and hasattr(testbed, "delay_backends"):
                backends = sorted(testbed.delay_backends)
                self.state.environment.delay_backend = ",".join(backends) if backends else "none used"
            if testbed is not None and hasattr(testbed, "close"):
                testbed.close()
        finally:
            self.testbed = None
            if self.events is not None:
                self.events.stop()
            if self.client is not None:  # the testbed's close has removed everything labelled with the run
                environment.finish(self.state.environment, self._steal_start)

    # --- measuring ---------------------------------------------------------------------------
    def _executor_for(self, plan: Plan) -> Executor:
        testbed, runner = self._ensure_up()

        def prepared(scenario: Scenario) -> None:
            delay = getattr(testbed, "delay", None)
            if scenario.delay_ms > 0 and delay is not None:
                self.state.environment.delay_backends_by_scenario[scenario.id] = delay.backend

        executor = Executor(
            plan,
            testbed,
            runner,
            on_sample=self.state.add,
            on_progress=self.progress.tick,
            on_prepared=prepared,
            on_planned=self.progress.add_planned,
            stop_policy=self._stop_policy,
        )
        for s in self.state.samples:  # iteration numbers continue across blocks and executors
            executor.measured.setdefault(s.scenario, []).append(s)
        return executor

    def _measure(self, plan: Plan, blocks: Sequence[Any] | None = None) -> dict[str, list[Sample]]:
        executor = self._executor_for(plan)
        try:
            return executor.run() if blocks is None else executor.run_blocks(blocks)
        except PrepareError as exc:
            pytest.fail(str(exc), pytrace=False)

    def _interleave_all(self) -> dict[str, list[Sample]]:
        if self._interleaved is None:
            self.write(
                f"[coldstart-bench] interleaving {len(self.plan.scenarios)} scenarios in {len(self.plan.blocks)} "
                f"blocks, seed {self.plan.seed}"
            )
            self._interleaved = self._measure(self.plan)
        return self._interleaved

    def run(self, scenario_id: str, benchmark: Any) -> list[Sample]:
        scenario = self.catalogue.by_id(scenario_id)
        reason = self.plan.skip_reason(scenario_id) or skip_reason(scenario, self.settings)
        if reason:
            pytest.skip(f"{scenario_id}: {reason}")
        if scenario_id in self.plan.ids:
            if self.plan.interleave:
                samples = self._interleave_all().get(scenario_id, [])
            else:
                samples = self._measure(self.plan, self.plan.blocks_of(scenario_id)).get(scenario_id, [])
        else:  # a scenario no selected test declared: measured on demand, counted when asked for
            extra = single_scenario_plan(scenario, self.settings)
            self.progress.add_planned(extra.cold_starts)
            samples = self._measure(extra).get(scenario_id, [])
        self._record_benchmark(benchmark, scenario, samples)
        status = self.testbed.pool_status() if self.testbed is not None and hasattr(self.testbed, "pool_status") else ""
        problems = validate(scenario, samples, pool_status=status)
        if scenario.backend == "pg":
            problems.extend(self._check_database())
        if problems:
            pytest.fail(f"{scenario_id}: " + "\n  ".join(problems), pytrace=False)
        return samples

    def _check_database(self) -> list[str]:
        """Every successful OLTP cold start committed exactly one transfer, and money is conserved."""
        testbed: Any = self.testbed
        if testbed is None or getattr(testbed, "pg", None) is None:
            return []
        total, balanced = testbed.pg.check_balances()
        transfers = total - testbed.pg_transfers_before
        self.state.environment.pg_transfers_checked = transfers
        problems = []
        if transfers != testbed.pg_cold_starts_ok:
            problems.append(
                f"database holds {transfers} transfers but {testbed.pg_cold_starts_ok} cold starts committed one"
            )
        if not balanced:
            problems.append("account balances do not add up to the initial total")
        return problems

    @staticmethod
    def _record_benchmark(benchmark: Any, scenario: Scenario, samples: Sequence[Sample]) -> None:
        """One pytest-benchmark round per cold-start round; its value is the lifecycle in seconds."""
        rounds: dict[int, list[float]] = {}
        for s in samples:
            if s.ok and not math.isnan(s.lifecycle_ms):
                rounds.setdefault(s.iteration // max(scenario.burst, 1), []).append(s.lifecycle_ms / 1000.0)
        values = [sum(v) / len(v) for _, v in sorted(rounds.items())]
        if not values:
            return
        clock = LifecycleClock()
        pending = iter(values)
        # pytest-benchmark reads the timer when it builds each round's runner. It has no public per-test
        # timer (--benchmark-timer is one for the whole session, and would time other benchmarks too).
        benchmark._timer = clock
        benchmark.group = "cold start lifecycle"
        benchmark.extra_info.update(
            {
                "scenario": scenario.id,
                "mode": scenario.mode,
                "delay_ms": scenario.delay_ms,
                "network": scenario.network,
                "burst": scenario.burst,
                "unit": "container lifecycle (docker create -> destroy)",
            }
        )
        benchmark.pedantic(lambda: clock.advance(next(pending)), rounds=len(values), iterations=1)
