"""pytest hooks of coldstart-bench: a thin layer over options, harness, analysis and reports."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from . import options as bench_options
from .finish import AnalysisInputs
from .harness import Harness, new_run_id
from .run_state import ReportWriteError, RunState
from .scenarios import burst_scenarios, by_id

OPTIONS_KEY = pytest.StashKey[bench_options.BenchOptions]()
STATE_KEY = pytest.StashKey[RunState]()
SELECTED_KEY = pytest.StashKey[list[str]]()
INPUTS_KEY = pytest.StashKey[AnalysisInputs]()
LINES_KEY = pytest.StashKey[list[str]]()
SCENARIO_ARG = "scenario_id"
BURST_ARG = "burst_scenario_id"


def pytest_addoption(parser: pytest.Parser) -> None:
    bench_options.addoption(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "bench_expect(text): an expectation on the run's statistics")
    config.addinivalue_line("markers", "pool_load: pool manager load benchmark (real processes, ~30 s)")
    config.addinivalue_line("markers", "integration: needs a real Docker engine")
    opts = bench_options.from_config(config)
    # Parse gate rules, the regression limit and the baseline once, now: a bad one is a usage error
    # before minutes of measuring, not a crash at the end.
    from .baseline import BaselineError, load_baseline
    from .gate import GateRuleError, parse_gate_rules, parse_max_regression

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
    config.stash[INPUTS_KEY] = AnalysisInputs(gate_rules, max_regression, baseline)
    config.stash[OPTIONS_KEY] = opts
    config.stash[STATE_KEY] = RunState(report_root=opts.report_dir, run_id=new_run_id())
    config.stash[SELECTED_KEY] = []
    config.stash[LINES_KEY] = []


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if BURST_ARG in metafunc.fixturenames:
        sizes = metafunc.config.stash[OPTIONS_KEY].bursts
        ids = [s.id for s in burst_scenarios(sizes)]
        metafunc.parametrize(BURST_ARG, ids, ids=ids)


def _scenario_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    for arg in (SCENARIO_ARG, BURST_ARG):
        if arg in callspec.params:
            return str(callspec.params[arg])
    return None


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: count only what will run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _deselect_pool_load(config, items)
    selected: list[str] = []
    expectations: list[str] = []
    for item in items:
        sid = _scenario_of(item)
        if sid is not None and sid not in selected:
            selected.append(sid)
        for mark in item.iter_markers("bench_expect"):
            for text in mark.args:
                if text not in expectations:
                    expectations.append(str(text))
    from .expectations import parse_expectation

    parsed = []
    for text in expectations:
        try:
            parsed.append(parse_expectation(text))
        except ValueError as exc:
            raise pytest.UsageError(f"bench_expect({text!r}): {exc}") from None
    config.stash[SELECTED_KEY] = selected
    config.stash[INPUTS_KEY].expectations = parsed
    if selected:
        from .preflight import run_preflight

        reporter = config.pluginmanager.get_plugin("terminalreporter")
        run_preflight(config, (lambda m: reporter.write_line(f"[coldstart-bench] {m}")) if reporter else print)


def _deselect_pool_load(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The pool manager load benchmarks saturate every core for a minute and measure another thing
    than cold starts: they run only when asked for (--bench-pool-load, or -m naming pool_load)."""
    if config.getoption("bench_pool_load") or "pool_load" in (config.getoption("markexpr") or ""):
        return
    deselected = [item for item in items if item.get_closest_marker("pool_load") is not None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item.get_closest_marker("pool_load") is None]


def _planned_cold_starts(config: pytest.Config) -> int:
    opts = config.stash[OPTIONS_KEY]
    total = 0
    for sid in config.stash[SELECTED_KEY]:
        scenario = by_id(sid, opts.bursts)
        rounds = max(1, -(-opts.iterations // scenario.burst))
        warmups = opts.warmup
        if opts.interleave:
            blocks = -(-rounds // opts.block_size)
            warmups += (blocks - 1) * opts.block_warmup
        total += (rounds + warmups) * scenario.burst
    return total


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

    selected: list[str] = config.stash[SELECTED_KEY]
    harness = Harness(
        config.stash[OPTIONS_KEY],
        config.stash[STATE_KEY],
        selected,
        write,
        _planned_cold_starts(config),
    )
    try:
        yield harness
    finally:
        harness.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if STATE_KEY not in config.stash or hasattr(config, "workerinput"):
        return
    state = config.stash[STATE_KEY]
    if not state.samples:
        return
    from .finish import finish_run

    lines, failed = finish_run(state, config.stash[OPTIONS_KEY], config.stash[INPUTS_KEY])
    config.stash[LINES_KEY] = lines
    if failed and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines = config.stash.get(LINES_KEY, [])
    if not lines:
        return
    terminalreporter.section("coldstart-bench")
    for line in lines:
        terminalreporter.write_line(line)


__all__ = ["ReportWriteError", "coldstart"]
