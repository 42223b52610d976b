"""What the benchmark tests call: brings up the testbed once, measures a scenario, validates it,
and feeds each round's lifecycle to pytest-benchmark so its storage and compare see every scenario."""

from __future__ import annotations

import math
import random
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pytest

from . import environment
from .campaign import cold_start_samples, interleaved_order, rounds_for, validate
from .engine import EngineUnavailable, connect
from .events import LifecycleEvents
from .options import BenchOptions
from .progress import Progress
from .run_state import RunState
from .runner import ColdStartRunner
from .samples import Sample
from .scenarios import Scenario, by_id

if TYPE_CHECKING:
    from .testbed import Testbed


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
        selected: Sequence[str],
        write: Callable[[str], None],
        planned: int,
    ) -> None:
        self.options = options
        self.state = state
        self.selected = list(selected)
        self.write = write
        self.progress = Progress(planned, write)
        self.client: Any = None
        self.testbed: Testbed | None = None
        self.events: LifecycleEvents | None = None
        self.runner: ColdStartRunner | None = None
        self._steal_start = environment.cpu_steal_ticks()
        self._interleaved: dict[str, list[Sample]] | None = None
        self._broken: str | None = None

    # --- bring-up / tear-down ----------------------------------------------------------------
    def _ensure_up(self) -> Testbed:
        if self._broken:
            pytest.fail(self._broken, pytrace=False)
        if self.testbed is not None:
            return self.testbed
        try:
            self.client = connect()
        except EngineUnavailable as exc:
            # Every test would fail the same way: stop the session once.
            pytest.exit(f"coldstart-bench: {exc}", returncode=int(pytest.ExitCode.USAGE_ERROR))
        # Docker-side modules load on first use, so unit tests and option errors never need them.
        from .images import ImageBuildError, ensure_images
        from .testbed import LABEL_RUN, Testbed, TestbedConfig, sweep

        try:
            images = ensure_images(self.client, log=lambda m: self.write(f"[coldstart-bench] {m}"))
        except ImageBuildError as exc:
            msg = f"coldstart-bench: cannot build the images: {exc}"
            pytest.exit(msg, returncode=int(pytest.ExitCode.USAGE_ERROR))
        sweep(self.client)  # leftovers of runs whose process died (kill -9, power loss)
        self.state.environment.update(environment.capture(self.client))
        self.state.environment["base_image"] = images.base
        self.state.environment["base_route"] = images.base_route
        self.state.environment["run_id"] = self.state.run_id
        self.state.environment["command"] = "pytest " + " ".join(sys.argv[1:])
        self.state.environment["iterations"] = self.options.iterations
        self.state.environment["warmup"] = self.options.warmup
        self.state.environment["pool_size"] = self.options.pool_size
        self._install_sigterm()
        self.events = LifecycleEvents(self.client, f"{LABEL_RUN}={self.state.run_id}").start()
        self.runner = ColdStartRunner(self.client, self.events)
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
        self.testbed = testbed
        self.progress.restart_clock()
        return testbed

    @staticmethod
    def _install_sigterm() -> None:
        # A CI runner's SIGTERM should clean up like Ctrl-C does.
        if threading.current_thread() is threading.main_thread():

            def _raise(signum: int, frame: object) -> None:
                raise KeyboardInterrupt(f"signal {signum}")

            signal.signal(signal.SIGTERM, _raise)

    def close(self) -> None:
        try:
            if self.testbed is not None:
                backends = sorted(self.testbed.delay_backends)
                self.state.environment["delay_backend"] = ",".join(backends) if backends else "none used"
                self.testbed.close()
        finally:
            self.testbed = None
            if self.events is not None:
                self.events.stop()
            if self.client is not None:  # the testbed's close has removed everything labelled with the run
                environment.finish(self.state.environment, self._steal_start)

    # --- measuring ---------------------------------------------------------------------------
    def _measure(self, scenario: Scenario, rounds: int, block: int = 0, warmup: int = 0) -> list[Sample]:
        testbed = self._ensure_up()
        assert self.runner is not None
        try:
            testbed.prepare(scenario)
        except Exception as exc:
            pytest.fail(f"{scenario.id}: could not prepare the testbed: {exc}", pytrace=False)
        if scenario.delay_ms > 0 and testbed.delay is not None:
            self.state.environment.setdefault("delay_backends_by_scenario", {})[scenario.id] = testbed.delay.backend
        for _ in range(warmup):
            cold_start_samples(testbed, self.runner, scenario, iteration=-1)
            self.progress.tick(f"{scenario.id} (warm-up)", scenario.burst)
        measured: list[Sample] = []
        first = len([s for s in self.state.samples if s.scenario == scenario.id]) // max(scenario.burst, 1)
        for r in range(rounds):
            batch = cold_start_samples(testbed, self.runner, scenario, iteration=first + r, block=block)
            for sample in batch:
                self.state.add(sample)
            measured.extend(batch)
            self.progress.tick(scenario.id, len(batch))
            if any(not s.ok for s in batch) and sum(not s.ok for s in measured) >= 3:
                break  # something is broken: stop burning time, report what we have
        return measured

    def _skip_reason(self, scenario: Scenario) -> str:
        if scenario.backend == "pg" and scenario.delay_ms > 0 and self.options.pg_external is not None:
            return "the SYN-ACK delay needs the database container, not --bench-pg-target"
        return ""

    def _interleave_all(self) -> dict[str, list[Sample]]:
        if self._interleaved is not None:
            return self._interleaved
        seed = self.options.seed if self.options.seed is not None else random.SystemRandom().randrange(2**31)
        scenarios = [sc for sc in (by_id(s, self.options.bursts) for s in self.selected) if not self._skip_reason(sc)]
        ids = [s.id for s in scenarios]
        rounds = {s.id: rounds_for(s, self.options.iterations) for s in scenarios}
        blocks = interleaved_order(ids, self.options.iterations, self.options.block_size, seed, rounds)
        # Recorded with the environment, so summary.json says how the run was ordered.
        self.state.environment["interleave"] = {
            "seed": seed,
            "block_size": self.options.block_size,
            "order": [[b.index, b.scenario, b.count] for b in blocks],
        }
        self.write(f"[coldstart-bench] interleaving {len(ids)} scenarios in {len(blocks)} blocks, seed {seed}")
        results: dict[str, list[Sample]] = {sid: [] for sid in ids}
        warmed: set[str] = set()
        for block in blocks:
            scenario = by_id(block.scenario, self.options.bursts)
            # Every block after the first opens with a discarded cold start: switching the testbed
            # (delay sidecar, pool manager) perturbs the engine for the next start or two.
            warm = self.options.block_warmup if scenario.id in warmed else self.options.warmup
            warmed.add(scenario.id)
            results[scenario.id].extend(self._measure(scenario, block.count, block=block.index, warmup=warm))
        self._interleaved = results
        return results

    def run(self, scenario_id: str, benchmark: Any) -> list[Sample]:
        scenario = by_id(scenario_id, self.options.bursts)
        reason = self._skip_reason(scenario)
        if reason:
            pytest.skip(f"{scenario_id}: {reason}")
        if self.options.interleave and scenario_id in self.selected:
            samples = self._interleave_all()[scenario_id]
        else:
            samples = self._measure(scenario, rounds_for(scenario, self.options.iterations), warmup=self.options.warmup)
        self._record_benchmark(benchmark, scenario, samples)
        status = self.testbed.pool_status() if self.testbed is not None else ""
        problems = validate(scenario, samples, pool_status=status)
        if scenario.backend == "pg":
            problems.extend(self._check_database())
        if problems:
            pytest.fail(f"{scenario_id}: " + "\n  ".join(problems), pytrace=False)
        return samples

    def _check_database(self) -> list[str]:
        """Every successful OLTP cold start committed exactly one transfer, and money is conserved."""
        if self.testbed is None or self.testbed.pg is None:
            return []
        total, balanced = self.testbed.pg.check_balances()
        transfers = total - self.testbed.pg_transfers_before
        self.state.environment["pg_transfers_checked"] = transfers
        problems = []
        if transfers != self.testbed.pg_cold_starts_ok:
            problems.append(
                f"database holds {transfers} transfers but {self.testbed.pg_cold_starts_ok} cold starts committed one"
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
        benchmark._timer = clock  # pytest-benchmark reads the timer when it builds each round's runner
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
