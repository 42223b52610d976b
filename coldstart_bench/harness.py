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
from .measure.executor import CampaignTiming, Executor, PrepareError, Runner, StopPolicy, validate
from .measure.executor import Testbed as TestbedLike
from .measure.runner import ColdStartRunner
from .options import BenchOptions
from .plan import Plan, PlanSettings, Skip, plan_settings, single_scenario_plan, skip_reason
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
        self.catalogue = catalogue or default_catalogue(options.bursts, options.runtimes, options.rtts)
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
        self.timing = CampaignTiming()  # every executor of the run adds to it; summary.json records it
        self._interleaved: dict[str, list[Sample]] | None = None
        self._broken: str | None = None
        self._validated_pulled: set[str] = set()

    @property
    def settings(self) -> PlanSettings:
        return plan_settings(self.options)

    # --- bring-up / tear-down ----------------------------------------------------------------
    def _ensure_up(self) -> tuple[TestbedLike, Runner]:
        if self._broken:
            pytest.fail(self._broken, pytrace=False)
        if self.testbed is None or self.runner is None:
            self.testbed, self.runner = self._bring_up()
            self._apply_runtime_verdicts(self.testbed)
            self.progress.restart_clock()
            start = getattr(self._stop_policy, "start", None)
            if start is not None:  # a time budget counts measuring, not image builds
                start()
        return self.testbed, self.runner

    # --- the runtime axis ------------------------------------------------------------------------
    def _runtime_verdict(self, scenario: Scenario) -> tuple[str, str] | None:
        support = getattr(self.testbed, "runtime_support", None)
        return support.verdict(scenario) if support is not None else None

    def _apply_runtime_verdicts(self, testbed: TestbedLike) -> None:
        """After the probes: scenarios on a missing runtime are skipped, those a runtime cannot serve are
        unsupported (recorded with the reason, never measured); both leave the plan."""
        from .measure.runtime_axis import MISSING

        support = getattr(testbed, "runtime_support", None)
        if support is None:
            return
        self.state.environment.update({"runtime_probes": support.as_dict()})
        dropped: set[str] = set()
        for scenario in self.plan.scenarios:
            verdict = support.verdict(scenario)
            if verdict is None:
                continue
            kind, reason = verdict
            dropped.add(scenario.id)
            if kind == MISSING:
                self.plan.skips.append(Skip(scenario.id, reason))
            else:
                self.state.unsupported[scenario.id] = reason
        if dropped:
            removed = sum(b.cold_starts for b in self.plan.blocks if b.scenario in dropped)
            self.plan.scenarios[:] = [s for s in self.plan.scenarios if s.id not in dropped]
            self.plan.blocks[:] = [b for b in self.plan.blocks if b.scenario not in dropped]
            self.progress.add_planned(-removed)

    def _fail_broken(self, message: str) -> None:
        self._broken = message
        pytest.fail(message, pytrace=False)

    def _bring_up_docker(self) -> tuple[TestbedLike, Runner]:
        try:
            self.client = connect()
        except EngineUnavailable as exc:
            # Every test would fail the same way: stop the session once.
            pytest.exit(f"coldstart-bench: {exc}", returncode=int(pytest.ExitCode.USAGE_ERROR))
        # Docker-side modules load on first use, so unit tests and option errors never need them.
        from .measure.images import ImageBuildError, ensure_images
        from .measure.testbed import LABEL_RUN, Testbed, TestbedConfig, sweep
        from .userscenarios import user_scenario_ids

        users = user_scenario_ids(self.options.user_scenarios)
        try:
            images = ensure_images(
                self.client, log=lambda m: self.write(f"[coldstart-bench] {m}"), image_dirs=self._user_images(users)
            )
        except ImageBuildError as exc:
            msg = f"coldstart-bench: cannot build the images: {exc}"
            pytest.exit(msg, returncode=int(pytest.ExitCode.USAGE_ERROR))
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
        env.update({"bench_runtimes": list(self.options.runtimes), "requests_per_cold_start": self.options.requests})
        env.update({"prefetch": self.options.prefetch})
        self._install_sigterm()
        self.events = LifecycleEvents(self.client, f"{LABEL_RUN}={self.state.run_id}").start()
        runner = ColdStartRunner(self.client, self.events)
        testbed = Testbed(
            self.client,
            images,
            self.state.run_id,
            TestbedConfig(
                pool_size=self.options.pool_size,
                pg_external=self.options.pg_external,
                runtimes=self.options.runtimes,
                requests=self.options.requests,
                prefetch=self.options.prefetch,
            ),
        )
        if users:
            testbed.add_user_scenarios(users)
        try:
            testbed.start()
        except Exception as exc:
            try:
                testbed.close()
            finally:
                self._broken = f"coldstart-bench: the testbed did not come up: {exc}"
            pytest.fail(self._broken, pytrace=False)
        return testbed, runner

    def _user_images(self, users: dict[str, Any]) -> dict[str, Any]:
        """Build directories of a scenario file's functions and backends; a local image it names
        must exist (no registry is asked): a usage error before the testbed starts otherwise."""
        import docker.errors

        from .measure.userbed import image_dirs

        for user in users.values():
            for source in (user.function, user.backend.source):
                if source is not None and source.image:
                    try:
                        self.client.images.get(source.image)
                    except docker.errors.ImageNotFound:
                        where = f"{user.source_file}: scenarios.{user.id}"
                        pytest.exit(
                            f"coldstart-bench: {where}: image {source.image!r} is not on the engine; "
                            "pull or build it first (or give build = DIR)",
                            returncode=int(pytest.ExitCode.USAGE_ERROR),
                        )
        return image_dirs(users)

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
                try:
                    testbed.close()
                finally:
                    sessions = getattr(testbed, "pg_sessions_by_scenario", None)
                    if sessions:
                        self.state.environment.pg_sessions_by_scenario = sessions
            totals = getattr(testbed, "relay_totals", None)
            if totals is not None and totals.totals["started"]:
                self.state.environment.update({"relay_stats": totals.as_dict()})
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
            if (scenario.delay_ms > 0 or scenario.rtt_ms > 0) and delay is not None:
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
            timing=self.timing,
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
        finally:
            self.state.environment.campaign_timing = self.timing.to_dict()

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
        self._ensure_up()
        verdict = self._runtime_verdict(scenario)
        if verdict is not None:
            from .measure.runtime_axis import UNSUPPORTED

            kind, why = verdict
            if kind == UNSUPPORTED:
                self.state.unsupported[scenario_id] = why
                pytest.skip(f"{scenario_id}: unsupported on runtime {scenario.runtime}: {why}")
            pytest.skip(f"{scenario_id}: {why}")
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
        for pulled, pulled_samples in self._pulled_by(scenario):
            problems.extend(f"{pulled.id} (pulled in): {p}" for p in validate(pulled, pulled_samples, status))
        if scenario.backend == "pg" or any(self.plan.scenario(p).backend == "pg" for p in self.plan.pulled):
            problems.extend(self._check_database())
        problems.extend(self._check_handouts())
        if scenario.transport == "tls":
            problems.extend(self._check_tls_sessions())
        if problems:
            pytest.fail(f"{scenario_id}: " + "\n  ".join(problems), pytrace=False)
        return samples

    def _pulled_by(self, scenario: Scenario) -> list[tuple[Scenario, list[Sample]]]:
        """The scenarios this one pulled into the run (no test of their own), measured if a sequential
        plan has not yet, each handed out for validation once."""
        out = []
        for ref in scenario.references:
            sid = ref.scenario
            if not ref.pulled or sid not in self.plan.pulled or sid in self._validated_pulled:
                continue
            self._validated_pulled.add(sid)
            if self.plan.interleave:
                samples = self._interleave_all().get(sid, [])
            else:
                samples = self._measure(self.plan, self.plan.blocks_of(sid)).get(sid, [])
            out.append((self.plan.scenario(sid), samples))
        return out

    def _check_handouts(self) -> list[str]:
        """The pool managers handed out exactly one connection per injected cold start (path socket,
        fd3, ...), warm-ups included: nothing was handed out that no function adopted."""
        check = getattr(self.testbed, "check_handouts", None)
        return check() if check is not None else []

    def _check_database(self) -> list[str]:
        """Every successful OLTP cold start committed exactly one transfer, and money is conserved."""
        testbed: Any = self.testbed
        if testbed is None or getattr(testbed, "pg", None) is None:
            return []
        if hasattr(testbed, "close_session_window"):  # the check's own psql session is no arm's cost
            testbed.close_session_window()
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

    def _check_tls_sessions(self) -> list[str]:
        """The TLS backend accepted exactly one session per TLS cold start (measure/tls_testbed.py)."""
        testbed: Any = self.testbed
        if testbed is None or not hasattr(testbed, "check_tls_sessions"):
            return []
        record, problems = testbed.check_tls_sessions()
        if record:
            self.state.environment.update({"tls_sessions_checked": record})
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
