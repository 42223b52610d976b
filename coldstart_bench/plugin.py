"""pytest hooks of coldstart-bench: a thin layer over options, harness, analysis and reports."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from . import options as bench_options
from .catalogue import Catalogue, burst_ids, default_catalogue, single_start_ids
from .finish import AnalysisInputs
from .harness import Harness, new_run_id
from .plan import Plan, plan, plan_settings
from .run_state import ReportWriteError, RunState, check_report_root

OPTIONS_KEY = pytest.StashKey[bench_options.BenchOptions]()
STATE_KEY = pytest.StashKey[RunState]()
SELECTED_KEY = pytest.StashKey[list[str]]()
DESELECTED_KEY = pytest.StashKey[set[str]]()
INPUTS_KEY = pytest.StashKey[AnalysisInputs]()
LINES_KEY = pytest.StashKey[list[str]]()
CATALOGUE_KEY = pytest.StashKey[Catalogue]()
PLAN_KEY = pytest.StashKey[Plan]()
STOP_OPTIONS_KEY = pytest.StashKey[Any]()  # analyse.sequential.StoppingOptions, when a stopping rule is set
STOP_POLICY_KEY = pytest.StashKey[Any]()  # stopping.PrecisionStopPolicy of the run
SCENARIO_ARG = "scenario_id"  # a test of your own measuring one scenario of the catalogue
CATALOGUE_ARG = "catalogue_scenario_id"  # parametrized with every single-start scenario of the catalogue
BURST_ARG = "burst_scenario_id"  # parametrized with every burst scenario of the catalogue


def catalogue_of(config: pytest.Config) -> Catalogue:
    """The run's scenario catalogue. Extend it from the `pytest_coldstart_bench_catalogue` hook
    (hookspec.py); tests are generated from it at collection."""
    return config.stash[CATALOGUE_KEY]


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspec

    pluginmanager.add_hookspecs(hookspec)


def pytest_addoption(parser: pytest.Parser) -> None:
    bench_options.addoption(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "bench_expect(text): an expectation on the run's statistics")
    config.addinivalue_line("markers", "pool_load: pool manager load benchmark (real processes, ~30 s)")
    config.addinivalue_line(
        "markers", "connect_breakdown: phases of the injected connect in cold containers (minutes of cold starts)"
    )
    config.addinivalue_line("markers", "integration: needs a real Docker engine")
    opts = bench_options.from_config(config)
    # Parse gate rules, the regression limit and the baseline once, now: a bad one is a usage error
    # before minutes of measuring, not a crash at the end.
    from .analyse.baseline import BaselineError, load_baseline
    from .analyse.gate import GateRuleError, parse_gate_rules, parse_max_regression

    try:
        gate_rules = parse_gate_rules(opts.gate_text)
    except GateRuleError as exc:
        raise pytest.UsageError(f"bench_gate: {exc}") from None
    try:
        max_regression = parse_max_regression(opts.max_regression_text)
    except ValueError as exc:
        raise pytest.UsageError(f"--bench-max-regression: {exc}") from None
    try:
        baseline = load_baseline(opts.baseline) if opts.baseline is not None else None
    except BaselineError as exc:
        raise pytest.UsageError(f"--bench-baseline: {exc}") from None
    if opts.stopping:
        from .analyse.sequential import parse_stopping_options

        try:
            config.stash[STOP_OPTIONS_KEY] = parse_stopping_options(opts.precision, opts.max_time, opts.max_cold_starts)
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
        if not opts.interleave:
            raise pytest.UsageError(
                "a stopping rule adds interleaved rounds: it cannot be used with --bench-sequential"
            )
    config.stash[INPUTS_KEY] = AnalysisInputs(gate_rules, max_regression, baseline)
    config.stash[OPTIONS_KEY] = opts
    catalogue = default_catalogue(opts.bursts, opts.runtimes, opts.rtts)
    config.stash[CATALOGUE_KEY] = catalogue
    if opts.user_scenarios:
        from .userscenarios import ScenarioFileError, register_user_scenarios

        try:  # an id clashing with a built-in scenario is a usage error, before anything is measured
            register_user_scenarios(catalogue, opts.user_scenarios)
        except ScenarioFileError as exc:
            raise pytest.UsageError(f"--bench-scenarios: {exc}") from None
    config.hook.pytest_coldstart_bench_catalogue(config=config, catalogue=catalogue)
    config.stash[STATE_KEY] = RunState(report_root=opts.report_dir, run_id=new_run_id())
    config.stash[SELECTED_KEY] = []
    config.stash[DESELECTED_KEY] = set()
    config.stash[LINES_KEY] = []


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    catalogue = catalogue_of(metafunc.config)
    for arg, ids in ((CATALOGUE_ARG, single_start_ids(catalogue)), (BURST_ARG, burst_ids(catalogue))):
        if arg in metafunc.fixturenames:
            metafunc.parametrize(arg, ids, ids=ids)


def _scenario_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    for arg in (SCENARIO_ARG, CATALOGUE_ARG, BURST_ARG):
        if arg in callspec.params:
            return str(callspec.params[arg])
    return None


def pytest_deselected(items: Sequence[pytest.Item]) -> None:
    """Remember which scenarios -k/-m left out, so rules about them can say so."""
    for item in items:
        sid = _scenario_of(item)
        if sid is not None and DESELECTED_KEY in item.config.stash:
            item.config.stash[DESELECTED_KEY].add(sid)


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: count only what will run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for marker, option in OPT_IN_MARKERS:
        _deselect_unless_asked(config, items, marker, option)
    _select_profile(config, items)
    catalogue = catalogue_of(config)
    selected: list[str] = []
    expectations: list[str] = []
    for item in items:
        sid = _scenario_of(item)
        if sid is not None and sid not in selected:
            selected.append(sid)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and CATALOGUE_ARG in callspec.params:
            # The catalogue's expectations (the thesis's claims) come with its cold-start test.
            for text in catalogue.expectations():
                if text not in expectations:
                    expectations.append(text)
        for mark in item.iter_markers("bench_expect"):
            for text in mark.args:
                if text not in expectations:
                    expectations.append(str(text))
    from .analyse.expectations import parse_expectation

    parsed = []
    for text in expectations:
        try:
            parsed.append(parse_expectation(text))
        except ValueError as exc:
            raise pytest.UsageError(f"bench_expect({text!r}): {exc}") from None
    inputs = config.stash[INPUTS_KEY]
    pulled = catalogue.pulled_in([sid for sid in selected if catalogue.knows(sid)])
    deselected = config.stash[DESELECTED_KEY] - set(selected) - {s.id for s in pulled}  # pulled in: measured
    for rule in inputs.gate_rules:
        if rule.scenario not in selected and rule.scenario not in deselected and not catalogue.knows(rule.scenario):
            raise pytest.UsageError(
                f"bench_gate line {rule.line_no} {str(rule)!r}: unknown scenario {rule.scenario!r}; "
                f"the catalogue has {', '.join(catalogue.ids)}"
            )
    inputs.deselected = {r.scenario for r in inputs.gate_rules if r.scenario in deselected}
    for sid in sorted(inputs.deselected):
        config.stash[LINES_KEY].append(f"gate rules about {sid} not applied: the scenario was deselected (-k/-m)")
    unknown = [sid for sid in selected if not catalogue.knows(sid)]
    if unknown:
        raise pytest.UsageError(f"unknown scenario(s) {', '.join(map(repr, unknown))}: not in the catalogue")
    opts = config.stash[OPTIONS_KEY]
    if selected:
        try:  # a report directory that cannot be written is a usage error before anything is measured
            check_report_root(opts.report_dir)
        except ReportWriteError as exc:
            raise pytest.UsageError(f"--bench-report-dir: {exc}") from None
    run_plan = plan(plan_settings(opts), [catalogue.by_id(sid) for sid in selected], pulled)
    if run_plan.interleave:  # recorded with the environment, so summary.json says how the run was ordered
        config.stash[STATE_KEY].environment.interleave = run_plan.interleave_record()
    config.stash[SELECTED_KEY] = selected
    config.stash[PLAN_KEY] = run_plan
    inputs.expectations = parsed
    if selected:
        from .preflight import run_preflight

        reporter = config.pluginmanager.get_plugin("terminalreporter")
        run_preflight(config, (lambda m: reporter.write_line(f"[coldstart-bench] {m}")) if reporter else print)
    if STOP_OPTIONS_KEY in config.stash and run_plan.scenarios:
        config.stash[STOP_POLICY_KEY] = _stop_policy(config, catalogue, run_plan)


def _stop_policy(config: pytest.Config, catalogue: Catalogue, run_plan: Plan) -> Any:
    from .stopping import PrecisionStopPolicy, headline_pairs

    opts = config.stash[OPTIONS_KEY]
    headlines = headline_pairs(catalogue, run_plan.ids)
    if not headlines:
        raise pytest.UsageError(
            "the stopping rule needs a headline comparison among the selected scenarios (e.g. socket and direct); "
            f"selected: {', '.join(run_plan.ids)}"
        )
    return PrecisionStopPolicy.from_options(
        config.stash[STOP_OPTIONS_KEY],
        headlines,
        alpha=opts.alpha,
        seed=run_plan.seed if run_plan.seed is not None else 0,
        block_size=run_plan.block_size,
        block_warmup=run_plan.block_warmup,
    )


def _select_profile(config: pytest.Config, items: list[pytest.Item]) -> None:
    """--bench-profile: only the profile's scenarios run (-k/-m may narrow them further)."""
    from .profiles import profile_named

    profile = profile_named(config.stash[OPTIONS_KEY].profile)
    if profile is None or not profile.families:
        return
    wanted = set(profile.scenario_ids(catalogue_of(config)))
    deselected = [item for item in items if _scenario_of(item) not in wanted]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if _scenario_of(item) in wanted]


# Benchmarks that measure something else than the campaign, at length: they run only when asked
# for, by their option or by -m naming their marker. (marker, option dest)
OPT_IN_MARKERS: tuple[tuple[str, str], ...] = (
    ("pool_load", "bench_pool_load"),  # saturates every core for a minute
    ("connect_breakdown", "bench_connect_breakdown"),  # minutes of cold starts
)


def _deselect_unless_asked(config: pytest.Config, items: list[pytest.Item], marker: str, option: str) -> None:
    if config.getoption(option) or marker in (config.getoption("markexpr") or ""):
        return
    deselected = [item for item in items if item.get_closest_marker(marker) is not None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item.get_closest_marker(marker) is None]


@pytest.fixture(scope="session")
def coldstart(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """The session's harness: testbed up on first use, torn down (and swept) at the end."""
    config = request.config
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capman = config.pluginmanager.get_plugin("capturemanager")

    def write(line: str) -> None:
        # Progress must reach the terminal while the test's output is captured.
        if reporter is None:
            return
        if capman is not None:
            with capman.global_and_fixture_disabled():
                reporter.write_line(line)
        else:
            reporter.write_line(line)

    opts = config.stash[OPTIONS_KEY]
    run_plan = config.stash[PLAN_KEY] if PLAN_KEY in config.stash else plan(plan_settings(opts), [])
    state = config.stash[STATE_KEY]
    state.notify = write
    policy = config.stash.get(STOP_POLICY_KEY, None)
    if policy is not None:
        policy.write = write
    harness = Harness(opts, state, run_plan, write, catalogue_of(config), stop_policy=policy)
    try:
        yield harness
    finally:
        harness.close()


# --- the parts as fixtures, for benchmarks of your own (containers/) ------------------------------
@pytest.fixture(scope="session")
def bench_parts() -> Iterator[Any]:
    """The engine, run labels and images the part fixtures share; skips when no engine answers."""
    from .containers.fixture_run import FixtureRun
    from .measure.engine import EngineUnavailable

    try:
        run = FixtureRun()
    except EngineUnavailable as exc:
        pytest.skip(f"needs a Docker engine: {str(exc).splitlines()[0]}")
    try:
        yield run
    finally:
        run.close()


@pytest.fixture(scope="session")
def bench_network(bench_parts: Any) -> Iterator[Any]:
    """The run's Docker bridge network (`.name`)."""
    from .containers import BenchNetwork

    with BenchNetwork(bench_parts.client, labels=bench_parts.labels) as network:
        yield network


@pytest.fixture(scope="session")
def echo_server(bench_parts: Any, bench_network: Any) -> Iterator[Any]:
    """A started echo server; `.host`, `.port` (and `.target`) as seen from `bench_network`."""
    from .containers import EchoServer

    with EchoServer(bench_parts.image("echo"), network=bench_network.name, labels=bench_parts.labels) as echo:
        yield echo


@pytest.fixture(scope="session")
def pool_manager(bench_parts: Any, bench_network: Any, echo_server: Any) -> Iterator[Any]:
    """A started pool manager with one pool `echo` for `echo_server`; `.socket_dir` (host side), `.pool`."""
    from .containers import PoolManager

    pools = {"echo": {"target": echo_server.target, "size": 4}}
    with PoolManager(
        bench_parts.image("pool"), network=bench_network.name, pools=pools, labels=bench_parts.labels
    ) as manager:
        yield manager


@pytest.fixture(scope="session")
def function_image(bench_parts: Any) -> Any:
    """The Python echo function image (`.tag`)."""
    from .containers import FunctionImage

    return FunctionImage(bench_parts.image("function"))


@pytest.fixture(scope="session")
def cold_start(bench_parts: Any, bench_network: Any) -> Iterator[Any]:
    """`cold_start(function_image, mode="direct", target=echo_server)` or
    `cold_start(function_image, mode="socket", pool=pool_manager[, network="none"])`: one fresh
    function container, its Sample (`ok`, `connect_us`, `lifecycle_ms`, the phases)."""
    from .containers import ColdStart

    with ColdStart(bench_parts.client, network=bench_network.name, labels=bench_parts.labels) as run:
        yield run


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if STATE_KEY not in config.stash or hasattr(config, "workerinput"):
        return
    state = config.stash[STATE_KEY]
    if not state.samples:
        return
    from .finish import finish_run

    run_plan = config.stash.get(PLAN_KEY, None)
    policy = config.stash.get(STOP_POLICY_KEY, None)
    lines, failed = finish_run(
        state,
        config.stash[OPTIONS_KEY],
        config.stash[INPUTS_KEY],
        catalogue_of(config),
        run_plan,
        stopping=policy.record() if policy is not None else None,
        verbose=config.get_verbosity() > 0,
    )
    config.stash[LINES_KEY] = config.stash[LINES_KEY] + lines
    if failed and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's table: the answers end the output
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines = config.stash.get(LINES_KEY, [])
    if not lines:
        return
    terminalreporter.section("coldstart-bench")
    for line in lines:
        terminalreporter.write_line(line)


__all__ = [
    "ReportWriteError",
    "bench_network",
    "catalogue_of",
    "cold_start",
    "coldstart",
    "echo_server",
    "function_image",
    "pool_manager",
]
