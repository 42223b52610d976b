"""Command-line and ini options of the plugin, validated into one typed object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from .catalogue import DEFAULT_BURST_SIZES, DEFAULT_GATE, DEFAULT_RUNTIME, parse_burst_sizes, parse_rtts
from .plan import DEFAULT_WARMUP_AFTER, parse_warmup_after
from .profiles import PROFILES, profile_named
from .userscenarios import ScenarioFileError, UserScenario, load_scenario_file

# The expectation policies of analyse/expectations.py (kept here so parsing options loads no numpy).
POLICIES: tuple[str, ...] = ("report", "fail", "strict")

DEFAULT_ITERATIONS = 10
DEFAULT_WARMUP = 1
DEFAULT_BLOCK_SIZE = 5


def addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("coldstart-bench", "cold-start benchmark (coldstart-bench)")
    group.addoption(
        "--bench-iterations",
        type=int,
        default=None,
        metavar="N",
        help=f"measured cold starts per scenario (default {DEFAULT_ITERATIONS}; the thesis used 1000)",
    )
    group.addoption(
        "--bench-warmup",
        type=int,
        default=None,
        metavar="N",
        help=f"cold starts run and discarded before the run's first block, and before each scenario's first "
        f"block when --bench-warmup-after names 'first' (default {DEFAULT_WARMUP})",
    )
    group.addoption(
        "--bench-report-dir",
        default=None,
        metavar="DIR",
        help="where run directories and the 'latest' link go (default: reports/ under the rootdir)",
    )
    group.addoption(
        "--bench-interleave",
        action="store_true",
        default=None,
        help="run the selected scenarios in seeded randomised blocks (the default): drift of a shared "
        "machine then hits every scenario alike",
    )
    group.addoption(
        "--bench-sequential",
        action="store_false",
        dest="bench_interleave",
        help="run each scenario's cold starts one block after another, as the thesis did",
    )
    group.addoption(
        "--bench-seed",
        type=int,
        default=None,
        metavar="SEED",
        help="seed of the interleaved order (default: random, recorded in the report)",
    )
    group.addoption(
        "--bench-block-size",
        type=int,
        default=None,
        metavar="N",
        help=f"cold starts per block when interleaving (default {DEFAULT_BLOCK_SIZE})",
    )
    group.addoption(
        "--bench-block-warmup",
        type=int,
        default=1,
        metavar="N",
        help="discarded cold starts at the start of every later block when interleaving (default 1)",
    )
    group.addoption(
        "--bench-warmup-after",
        default=None,
        metavar="KINDS",
        help="switches between blocks that get the block warm-up: a comma list of start, first, backend, delay, "
        "pool, network, scenario (or all, none); default backend (measured: "
        "warmup_evidence in summary.json)",
    )
    group.addoption(
        "--bench-no-grouping",
        action="store_false",
        dest="bench_group_by_state",
        default=True,
        help="interleave without running scenarios of equal testbed state back to back",
    )
    group.addoption(
        "--bench-no-prefetch",
        action="store_false",
        dest="bench_prefetch",
        default=True,
        help="functions do not page in their code before the clock starts (components/prefetch.py): shorter "
        "lifecycles on a loaded fuse-overlayfs host, slower first connect (every mode alike)",
    )
    group.addoption(
        "--bench-bursts",
        default=",".join(map(str, DEFAULT_BURST_SIZES)),
        metavar="N,N,...",
        help="sizes of the concurrency sweep (burst-N-* scenarios), default 1,2,4,8",
    )
    group.addoption(
        "--bench-rtt",
        default="",
        metavar="MS,MS,...",
        help="round-trip times to add between function and backend, e.g. 1ms,10ms: <arm>-rtt-<N>ms variants of "
        "the direct and injected arms of echo, PostgreSQL and PostgreSQL over TLS (default: none)",
    )
    group.addoption(
        "--bench-pool-size",
        type=int,
        default=32,
        metavar="N",
        help="connections the pool manager keeps open (default 32)",
    )
    group.addoption(
        "--bench-pool-load",
        action="store_true",
        default=False,
        help="also run the pool manager load benchmarks (marker pool_load; about a minute of full CPU)",
    )
    group.addoption(
        "--bench-connect-breakdown",
        action="store_true",
        default=False,
        help="also run the connect breakdown benchmark (marker connect_breakdown; minutes of cold starts)",
    )
    group.addoption(
        "--bench-connect-breakdown-n",
        type=int,
        default=20,
        metavar="N",
        help="cold starts per arm of the connect breakdown benchmark (default 20)",
    )
    group.addoption(
        "--bench-pg-target",
        default=None,
        metavar="HOST:PORT",
        help="run the pg-* scenarios against your own PostgreSQL instead of a container "
        "(reachable from containers; scram-sha-256, no TLS; schema loaded if missing)",
    )
    group.addoption("--bench-pg-user", default="bench", metavar="ROLE", help="role for --bench-pg-target")
    group.addoption("--bench-pg-database", default="bench", metavar="DB", help="database for --bench-pg-target")
    group.addoption(
        "--bench-pg-password-file",
        default=None,
        metavar="PATH",
        help="file holding the role's password, for --bench-pg-target",
    )
    group.addoption(
        "--bench-baseline",
        default=None,
        metavar="PATH",
        help="compare with a saved baseline and fail on a significant regression",
    )
    group.addoption(
        "--bench-save-baseline",
        default=None,
        metavar="PATH",
        help="save this run's raw samples and summary as a baseline",
    )
    group.addoption(
        "--bench-max-regression",
        default="10%",
        metavar="PCT",
        help="smallest median change that counts as a regression against the baseline (default 10%%)",
    )
    group.addoption(
        "--bench-expectations",
        choices=POLICIES,
        default=None,
        help="whether a failed expectation only reports (default), fails the run (fail), or also fails it "
        "when an expectation lacks evidence (strict)",
    )
    group.addoption(
        "--bench-runtimes",
        default=None,
        metavar="LIST",
        help="OCI runtimes to run the scenarios on, comma-separated (default runc); a scenario on another "
        "runtime gets the id <scenario>@<runtime>, e.g. runc,runsc,crun",
    )
    group.addoption(
        "--bench-requests",
        type=int,
        default=5,
        metavar="N",
        help="echo round trips per cold start on the connection; request_rtt_us is their median (default 5)",
    )
    group.addoption(
        "--bench-scenarios",
        action="append",
        default=[],
        metavar="FILE",
        help="add the scenarios of a TOML scenario file (your own function and backend; "
        "format: examples/redis/README.md); may be given more than once",
    )
    group.addoption(
        "--bench-profile",
        default=None,
        choices=sorted(PROFILES),
        help="a named study design: scenario selection, cold starts and order (thesis: the five thesis "
        "scenarios, 1000 cold starts each, interleaved); options given explicitly override it",
    )
    group.addoption(
        "--bench-precision",
        default=None,
        metavar="P",
        help="keep adding interleaved rounds until every headline comparison's confidence-sequence half-width "
        "is within P: a share of the reference median (2%%) or a time (5ms); needs --bench-max-time",
    )
    group.addoption(
        "--bench-max-time",
        default=None,
        metavar="DURATION",
        help="time budget of the measuring (600, 90s, 10m, 1h30m): the run stops before another round would overrun it",
    )
    group.addoption(
        "--bench-max-cold-starts",
        type=int,
        default=None,
        metavar="N",
        help="cold-start budget of a run with --bench-precision: stop once this many were measured",
    )
    parser.addini(
        "bench_gate",
        type="string",
        default=DEFAULT_GATE,
        help="absolute gate rules, one a line: <scenario>.<metric>.<stat> <= <value>",
    )
    parser.addini(
        "bench_expectations",
        type="string",
        default="report",
        help="report (default), fail or strict: what a failed expectation does",
    )
    parser.addini("bench_alpha", type="string", default="0.05", help="significance level of tests and gates")


@dataclass(frozen=True)
class BenchOptions:
    iterations: int
    warmup: int
    report_dir: Path
    interleave: bool
    seed: int | None
    block_size: int
    block_warmup: int
    bursts: tuple[int, ...]
    pool_size: int
    gate_text: str
    baseline: Path | None
    save_baseline: Path | None
    max_regression_text: str
    expectation_policy: str
    alpha: float
    pg_external: ExternalPg | None = None
    runtimes: tuple[str, ...] = (DEFAULT_RUNTIME,)
    rtts: tuple[float, ...] = ()  # --bench-rtt: round-trip times of the rtt variants (ms)
    requests: int = 5
    user_scenarios: tuple[UserScenario, ...] = ()
    warmup_after: frozenset[str] = DEFAULT_WARMUP_AFTER
    group_by_state: bool = True
    prefetch: bool = True
    profile: str | None = None
    precision: str | None = None  # --bench-precision, validated by the plugin with the stopping rule
    max_time: str | None = None
    max_cold_starts: int | None = None

    @property
    def stopping(self) -> bool:
        """A stopping rule decides when the run has measured enough."""
        return any(x is not None for x in (self.precision, self.max_time, self.max_cold_starts))


@dataclass(frozen=True)
class ExternalPg:
    """Your own PostgreSQL for the pg-* scenarios."""

    host: str
    port: int
    user: str
    database: str
    password_file: Path


def _external_pg(config: pytest.Config) -> ExternalPg | None:
    target = config.getoption("bench_pg_target")
    if not target:
        return None
    host, _, port = str(target).rpartition(":")
    if not host or not port.isdigit():
        raise pytest.UsageError(f"--bench-pg-target expects HOST:PORT, got {target!r}")
    pw = config.getoption("bench_pg_password_file")
    if not pw or not Path(pw).is_file():
        raise pytest.UsageError(
            "--bench-pg-target needs --bench-pg-password-file PATH, a readable file holding the role's password"
        )
    return ExternalPg(
        host, int(port), config.getoption("bench_pg_user"), config.getoption("bench_pg_database"), Path(pw)
    )


def _user_scenarios(config: pytest.Config) -> tuple[UserScenario, ...]:
    out: list[UserScenario] = []
    for path in config.getoption("bench_scenarios") or []:
        try:
            out.extend(load_scenario_file(path))
        except ScenarioFileError as exc:
            raise pytest.UsageError(f"--bench-scenarios: {exc}") from None
    seen: dict[str, UserScenario] = {}
    for user in out:
        other = seen.setdefault(user.id, user)
        if other is not user:
            raise pytest.UsageError(
                f"--bench-scenarios: scenario id {user.id!r} is in both {other.source_file} and {user.source_file}"
            )
    return tuple(out)


def _positive(name: str, value: int, minimum: int) -> int:
    if value < minimum:
        raise pytest.UsageError(f"{name} must be >= {minimum}, got {value}")
    return value


def from_config(config: pytest.Config) -> BenchOptions:
    """Validate everything up front: a bad option is a usage error before any container starts."""
    opt = config.getoption
    try:
        profile = profile_named(opt("bench_profile"))
    except ValueError as exc:
        raise pytest.UsageError(f"--bench-profile: {exc}") from None
    iterations_raw = opt("bench_iterations")
    if iterations_raw is None and profile is not None:
        iterations_raw = profile.iterations
    iterations = _positive("--bench-iterations", DEFAULT_ITERATIONS if iterations_raw is None else iterations_raw, 1)
    interleave = opt("bench_interleave")
    if interleave is None:
        interleave = profile.interleave if profile is not None and profile.interleave is not None else True
    block_size = opt("bench_block_size")
    if block_size is None:
        block_size = profile.block_size if profile is not None and profile.block_size else DEFAULT_BLOCK_SIZE
    max_cold_starts = opt("bench_max_cold_starts")
    if max_cold_starts is not None:
        _positive("--bench-max-cold-starts", max_cold_starts, 1)
    warmup_raw = opt("bench_warmup")
    warmup = _positive("--bench-warmup", DEFAULT_WARMUP if warmup_raw is None else warmup_raw, 0)
    try:
        bursts = parse_burst_sizes(opt("bench_bursts"))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    report_dir = Path(opt("bench_report_dir") or "reports")
    if not report_dir.is_absolute():
        report_dir = config.rootpath / report_dir
    policy = opt("bench_expectations") or str(config.getini("bench_expectations")).strip() or "report"
    if policy not in POLICIES:
        raise pytest.UsageError(f"bench_expectations must be one of {', '.join(POLICIES)}, got {policy!r}")
    try:
        alpha = float(str(config.getini("bench_alpha")))
    except ValueError:
        raise pytest.UsageError(f"bench_alpha must be a number, got {config.getini('bench_alpha')!r}") from None
    if not 0 < alpha < 1:
        raise pytest.UsageError(f"bench_alpha must be between 0 and 1, got {alpha}")
    baseline = opt("bench_baseline")
    save = opt("bench_save_baseline")
    warmup_after_text = opt("bench_warmup_after")
    try:
        warmup_after = parse_warmup_after(warmup_after_text) if warmup_after_text else DEFAULT_WARMUP_AFTER
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    return BenchOptions(
        iterations=iterations,
        warmup=warmup,
        report_dir=report_dir,
        interleave=bool(interleave),
        seed=opt("bench_seed"),
        block_size=_positive("--bench-block-size", block_size, 1),
        block_warmup=_positive("--bench-block-warmup", opt("bench_block_warmup"), 0),
        bursts=bursts,
        pool_size=_positive("--bench-pool-size", opt("bench_pool_size"), 1),
        gate_text=str(config.getini("bench_gate")),
        baseline=Path(baseline) if baseline else None,
        save_baseline=Path(save) if save else None,
        max_regression_text=str(opt("bench_max_regression")),
        expectation_policy=policy,
        alpha=alpha,
        pg_external=_external_pg(config),
        runtimes=_runtimes(opt("bench_runtimes")),
        rtts=_rtts(opt("bench_rtt")),
        requests=_positive("--bench-requests", opt("bench_requests"), 1),
        user_scenarios=_user_scenarios(config),
        warmup_after=warmup_after,
        group_by_state=bool(opt("bench_group_by_state")),
        prefetch=bool(opt("bench_prefetch")),
        profile=profile.name if profile is not None else None,
        precision=opt("bench_precision"),
        max_time=opt("bench_max_time"),
        max_cold_starts=max_cold_starts,
    )


def _rtts(value: str | None) -> tuple[float, ...]:
    try:
        return parse_rtts(value or "")
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def _runtimes(value: str | None) -> tuple[str, ...]:
    from .measure.runtimes import RuntimeConfigError, parse_runtimes

    try:
        return parse_runtimes(value)
    except RuntimeConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
