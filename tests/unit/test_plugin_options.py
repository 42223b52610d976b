"""The plugin's options and usage errors, through a real pytest run (pytester), no Docker."""

from __future__ import annotations

import pytest


def _run(pytester: pytest.Pytester, plugin: tuple[str, ...], *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_x="def test_x():\n    assert 1 + 1 == 2\n")
    return pytester.runpytest_subprocess(*plugin, "-p", "no:cacheprovider", *args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--bench-iterations", "0"), "--bench-iterations must be >= 1"),
        (("--bench-warmup", "-1"), "--bench-warmup must be >= 0"),
        (("--bench-bursts", "1,x"), "--bench-bursts expects comma-separated positive integers"),
        (("--bench-max-regression", "lots"), "--bench-max-regression"),
        (("-o", "bench_gate=socket.connect_us.p42 <= 1"), "bench_gate"),
        (("-o", "bench_gate=socket.connect_us.median >= 1"), "bench_gate"),
        (("-o", "bench_alpha=2"), "bench_alpha must be between 0 and 1"),
        (("--bench-warmup-after", "delay,sidecar"), "--bench-warmup-after expects"),
        (("--bench-pg-target", "db.example"), "--bench-pg-target expects HOST:PORT"),
        (("--bench-pg-target", "10.0.0.5:5432"), "--bench-pg-password-file"),
        (("--bench-pg-target", "10.0.0.5:5432", "--bench-pg-password-file", "/nonexistent"), "readable file"),
    ],
)
def test_bad_options_are_usage_errors(
    pytester: pytest.Pytester, plugin: tuple[str, ...], args: tuple[str, ...], message: str
) -> None:
    result = _run(pytester, plugin, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])
    assert "Traceback" not in result.stderr.str()


def test_good_options_do_not_touch_docker_or_write_reports(pytester: pytest.Pytester, plugin: tuple[str, ...]) -> None:
    result = _run(pytester, plugin, "--bench-iterations", "5", "--bench-report-dir", "out",
                  "-o", "bench_gate=socket.connect_us.p95 <= 100")  # fmt: skip
    result.assert_outcomes(passed=1)
    assert not (pytester.path / "out").exists()  # no benchmark ran: no report directory


def test_help_lists_the_options(pytester: pytest.Pytester, plugin: tuple[str, ...]) -> None:
    result = pytester.runpytest_subprocess(*plugin, "--help")
    result.stdout.fnmatch_lines(["*--bench-iterations=N*", "*--bench-baseline=PATH*", "*bench_gate*"])


def test_missing_baseline_is_a_usage_error_before_measuring(pytester: pytest.Pytester, plugin: tuple[str, ...]) -> None:
    result = _run(pytester, plugin, "--bench-baseline", "no/such/baseline")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--bench-baseline*no/such/baseline*--bench-save-baseline*"])


def test_malformed_expectation_is_a_usage_error(pytester: pytest.Pytester, plugin: tuple[str, ...]) -> None:
    pytester.makepyfile(
        test_y='import pytest\n@pytest.mark.bench_expect("socket.connect_us.p42 <= 1")\ndef test_y():\n    pass\n'
    )
    result = pytester.runpytest_subprocess(*plugin, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*bench_expect*p42*"])


def test_pool_load_benchmarks_run_only_when_asked(pytester: pytest.Pytester, plugin: tuple[str, ...]) -> None:
    pytester.makepyfile(
        test_z="import pytest\n@pytest.mark.pool_load\ndef test_load():\n    pass\ndef test_other():\n    pass\n"
    )
    default = pytester.runpytest_subprocess(*plugin, "-p", "no:cacheprovider")
    default.assert_outcomes(passed=1, deselected=1)
    asked = pytester.runpytest_subprocess(*plugin, "-p", "no:cacheprovider", "--bench-pool-load")
    asked.assert_outcomes(passed=2)


def test_connect_breakdown_benchmark_runs_only_when_asked(pytester: pytest.Pytester, plugin: tuple[str, ...]) -> None:
    pytester.makepyfile(
        test_c="import pytest\n@pytest.mark.connect_breakdown\ndef test_cb():\n    pass\ndef test_other():\n    pass\n"
    )
    pytester.runpytest_subprocess(*plugin, "-p", "no:cacheprovider").assert_outcomes(passed=1, deselected=1)
    by_option = pytester.runpytest_subprocess(*plugin, "-p", "no:cacheprovider", "--bench-connect-breakdown")
    by_option.assert_outcomes(passed=2)
    by_marker = pytester.runpytest_subprocess(*plugin, "-p", "no:cacheprovider", "-m", "connect_breakdown")
    by_marker.assert_outcomes(passed=1, deselected=1)


SCENARIO_TEST = (
    "import pytest\n"
    "@pytest.mark.parametrize('scenario_id', ['socket', 'direct'])\n"
    "def test_measure(scenario_id):\n"
    "    pass\n"
)


@pytest.mark.parametrize("kind", ["file", "file-below"])
def test_unusable_report_dir_is_a_usage_error_before_measuring(
    pytester: pytest.Pytester, plugin: tuple[str, ...], kind: str
) -> None:
    pytester.makepyfile(test_m=SCENARIO_TEST)
    (pytester.path / "taken").write_text("a file, not a directory\n")
    target = "taken" if kind == "file" else "taken/reports"
    result = pytester.runpytest_subprocess(*plugin, "-p", "no:cacheprovider", "--bench-report-dir", target)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--bench-report-dir*taken*not a directory*"])
    assert "Traceback" not in result.stderr.str()
    result.stdout.no_fnmatch_line("*test_measure*PASSED*")


def test_strict_expectation_policy_is_accepted(pytester: pytest.Pytester, plugin: tuple[str, ...]) -> None:
    result = _run(pytester, plugin, "--bench-expectations", "strict")
    result.assert_outcomes(passed=1)


def test_policies_match_the_expectations_module() -> None:
    from coldstart_bench.analyse.expectations import POLICIES as EVALUATED
    from coldstart_bench.options import POLICIES as ACCEPTED

    assert ACCEPTED == EVALUATED


def test_gate_rule_naming_an_unknown_scenario_is_a_usage_error(
    pytester: pytest.Pytester, plugin: tuple[str, ...]
) -> None:
    pytester.makepyfile(test_m=SCENARIO_TEST)
    result = pytester.runpytest_subprocess(
        *plugin, "-p", "no:cacheprovider", "-o", "bench_gate=sockt.connect_us.median <= 1"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*bench_gate line 1*unknown scenario 'sockt'*"])
    assert "Traceback" not in result.stderr.str()


def test_gate_rule_about_a_deselected_scenario_says_so(pytester: pytest.Pytester, plugin: tuple[str, ...]) -> None:
    pytester.makepyfile(test_m=SCENARIO_TEST)
    result = pytester.runpytest_subprocess(
        *plugin, "-p", "no:cacheprovider", "-o", "bench_gate=direct.connect_us.median <= 1", "-k", "socket"
    )
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["*gate rules about direct not applied: the scenario was deselected*"])


def test_a_conftest_extends_the_catalogue_and_its_scenario_is_collected(
    pytester: pytest.Pytester, plugin: tuple[str, ...]
) -> None:
    pytester.makeconftest(
        "from coldstart_bench.catalogue import Reference, Scenario\n"
        "def pytest_coldstart_bench_catalogue(config, catalogue):\n"
        "    catalogue.register(Scenario('socket-mine', 'socket', family='user', references=(Reference('direct'),)))\n"
    )
    pytester.makepyfile(test_c="def test_c(catalogue_scenario_id):\n    pass\n")
    result = pytester.runpytest_subprocess(*plugin, "-p", "no:cacheprovider", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*test_c[[]direct-aa[]]*", "*test_c[[]socket-mine[]]*"])


_PROFILE_TEST = """
from coldstart_bench.plugin import OPTIONS_KEY

def test_cold_start(catalogue_scenario_id, request):
    o = request.config.stash[OPTIONS_KEY]
    print("OPTS", catalogue_scenario_id, o.iterations, o.block_size, o.interleave, o.profile)
"""


def _opts(result: pytest.RunResult) -> list[list[str]]:
    return [line.split("OPTS", 1)[1].split() for line in result.stdout.lines if "OPTS " in line]


def test_the_thesis_profile_selects_its_scenarios_and_settings(
    pytester: pytest.Pytester, plugin: tuple[str, ...]
) -> None:
    pytester.makepyfile(test_p=_PROFILE_TEST)
    result = pytester.runpytest_subprocess(*plugin, "-p", "no:cacheprovider", "-s", "--bench-profile", "thesis")
    result.assert_outcomes(passed=5)
    lines = _opts(result)
    assert sorted(line[0] for line in lines) == sorted(
        ["socket", "direct", "direct-10ms", "direct-50ms", "direct-100ms"]
    )
    assert {tuple(line[1:]) for line in lines} == {("1000", "10", "True", "thesis")}


def test_explicit_options_override_the_profile(pytester: pytest.Pytester, plugin: tuple[str, ...]) -> None:
    pytester.makepyfile(test_p=_PROFILE_TEST)
    result = pytester.runpytest_subprocess(
        *plugin, "-p", "no:cacheprovider", "-s", "--bench-profile", "thesis", "--bench-iterations", "7",
        "--bench-block-size", "3", "--bench-sequential", "-k", "socket",
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    assert _opts(result) == [["socket", "7", "3", "False", "thesis"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--bench-precision", "5%"), "--bench-precision needs --bench-max-time"),
        (("--bench-precision", "five", "--bench-max-time", "10m"), "--bench-precision: precision must be"),
        (("--bench-max-time", "ten minutes"), "--bench-max-time: duration must look like"),
        (("--bench-precision", "5%", "--bench-max-time", "1m", "--bench-sequential"), "--bench-sequential"),
        (("--bench-profile", "nope"), "--bench-profile"),
    ],
)
def test_bad_stopping_options_are_usage_errors(
    pytester: pytest.Pytester, plugin: tuple[str, ...], args: tuple[str, ...], message: str
) -> None:
    result = _run(pytester, plugin, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])
