"""The scenario catalogue: the study design as data.

Each scenario declares how its function container and the testbed are set up (mode, backend,
network, delay, pool, release, burst and the axes runtime, language, transport, entrypoint,
handoff), which scenarios it is compared with, which of those comparisons are headline findings
(and what sentence they produce), the delay fit it belongs to and the thesis's expectations on it.
Comparisons, findings, plots, the report and the gate read these fields; nothing else in the
package knows a scenario id.

Adding a scenario of an existing family means adding one `Scenario(...)` entry below (or calling
`Catalogue.register` at configure time, e.g. for scenarios a user declares in a file); a new
family is a new tuple of entries (or a generator like `burst_scenarios`); a new axis is a new
field of `Scenario` with its default, read by the testbed when it builds the function container.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

# Kinds of finding a reference can produce (analyse/findings.py renders each).
LIFECYCLE_SAVING = "lifecycle_saving"  # median(reference) − median(scenario) of the lifecycle, with its CI
CONNECT_SPEEDUP = "connect_speedup"  # median connect(reference) / median connect(scenario)
PREDICTABILITY = "predictability"  # lifecycle variance and p99 side by side
FINDING_KINDS: tuple[str, ...] = (LIFECYCLE_SAVING, CONNECT_SPEEDUP, PREDICTABILITY)

# Roles of a comparison in the report.
HEADLINE = "headline"  # bold in the comparisons table: the question the scenario exists for
CONTROL = "control"  # an A/A pair: a significant difference is a false positive of the run

DEFAULT_RUNTIME = "runc"


@dataclass(frozen=True)
class Finding:
    """A sentence the report states about a (reference, scenario) pair."""

    kind: str
    topic: str
    subject: str = ""  # how a lifecycle-saving sentence names what the scenario does


@dataclass(frozen=True)
class Reference:
    """`scenario` is compared with this one on every primary metric."""

    scenario: str
    headline: bool = False
    control: bool = False
    findings: tuple[Finding, ...] = ()

    @property
    def role(self) -> str:
        return CONTROL if self.control else HEADLINE if self.headline else ""


@dataclass(frozen=True)
class DelaySeries:
    """Scenarios fitted against their configured SYN-ACK delay (thesis Table 2); the reference
    (an injected scenario) anchors the table's Diff column. The primary series is also exposed at
    the top level of the fit, and its fit slope becomes a finding."""

    name: str
    reference: str
    primary: bool = False


@dataclass(frozen=True)
class Scenario:
    name: str
    mode: str  # how the function is told to connect: "direct" | "socket"
    delay_ms: float = 0.0  # SYN-ACK delay on the backend while this scenario runs
    network: str = "bridge"  # "bridge" (the testbed network) | "none" (no container networking)
    pool_up: bool = True  # False: the pool manager is stopped, the function must fall back
    release: bool = False  # the function hands its connection back after use
    burst: int = 1  # cold starts started at once per round
    backend: str = "echo"  # "echo" | "pg"
    expect_path: str = ""  # connection path every sample must report ("" = same as mode)
    family: str = ""
    runtime: str = DEFAULT_RUNTIME  # OCI runtime of the function container
    language: str = "python"  # the function's language (later "node", "c")
    transport: str = "tcp"  # the connection's security (later "tls")
    entrypoint: str = "in-process"  # how the connection reaches the function (later "fd3")
    handoff: str = "fd"  # how the pool hands it over (later "relay")
    references: tuple[Reference, ...] = ()
    delay_series: str = ""  # name of the DelaySeries this scenario is a member of
    diff_reference: str = ""  # the injected scenario the report's Diff row subtracts
    burst_series: str = ""  # label of the burst curve this scenario is a point of
    thesis_role: str = ""  # "injected" | "direct": the pair set beside the thesis's figures
    expectations: tuple[str, ...] = ()  # bench_expect texts: the thesis's claims about this scenario
    description: str = ""

    @property
    def id(self) -> str:
        return self.name if self.runtime == DEFAULT_RUNTIME else f"{self.name}@{self.runtime}"

    @property
    def path(self) -> str:
        return self.expect_path or self.mode

    def declared(self) -> dict[str, Any]:
        """The scenario's metadata as summary.json carries it."""
        d = dataclasses.asdict(self)
        d["id"] = self.id
        d["references"] = [
            {"scenario": r.scenario, "role": r.role, "findings": [dataclasses.asdict(f) for f in r.findings]}
            for r in self.references
        ]
        d["expectations"] = list(self.expectations)
        return d


def _ref(scenario: str, *findings: Finding, headline: bool = False, control: bool = False) -> Reference:
    return Reference(scenario, headline=headline, control=control, findings=tuple(findings))


def _saving(topic: str, subject: str) -> Finding:
    return Finding(LIFECYCLE_SAVING, topic, subject)


# The thesis's five scenarios (section 6), then the ones that go beyond it.
THESIS_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "socket",
        "socket",
        family="thesis",
        references=(
            _ref(
                "direct",
                Finding(CONNECT_SPEEDUP, "connection"),
                _saving("injection", "Injection"),
                Finding(PREDICTABILITY, "predictability", "injection"),
                headline=True,
            ),
        ),
        diff_reference="socket",
        thesis_role="injected",
        expectations=(
            # Section 6.1: injection connects several times faster (3.6x on AWS).
            "socket.connect_us.median <= direct.connect_us.median / 2",
            # Section 6.2: injected cold starts are more predictable (Levene p = 0.0055).
            "socket.lifecycle_ms.variance < direct.lifecycle_ms.variance (levene, alpha=0.05)",
        ),
    ),
    Scenario("direct", "direct", family="thesis", delay_series="direct", diff_reference="socket", thesis_role="direct"),
    Scenario(
        "direct-10ms",
        "direct",
        delay_ms=10,
        family="thesis",
        references=(_ref("direct"),),
        delay_series="direct",
        diff_reference="socket",
    ),
    Scenario(
        "direct-50ms",
        "direct",
        delay_ms=50,
        family="thesis",
        references=(_ref("direct"),),
        delay_series="direct",
        diff_reference="socket",
        # Table 2: lifecycle grows with the handshake delay.
        expectations=("direct-50ms.lifecycle_ms.median > direct-10ms.lifecycle_ms.median (mannwhitney, alpha=0.05)",),
    ),
    Scenario(
        "direct-100ms",
        "direct",
        delay_ms=100,
        family="thesis",
        references=(_ref("direct"),),
        delay_series="direct",
        diff_reference="socket",
        expectations=("direct-100ms.lifecycle_ms.median > direct-50ms.lifecycle_ms.median (mannwhitney, alpha=0.05)",),
    ),
)

EXTENDED_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "socket-nonet",
        "socket",
        network="none",
        family="extended",
        references=(
            _ref("direct", _saving("no-network", "Injection into a function without container networking")),
            _ref("socket", _saving("no-network", "Dropping container networking on top of injection"), headline=True),
        ),
        diff_reference="socket",
        # Beyond the thesis: no container networking is cheaper.
        expectations=("socket-nonet.lifecycle_ms.median < direct.lifecycle_ms.median (mannwhitney, alpha=0.05)",),
    ),
    Scenario(
        "socket-100ms",
        "socket",
        delay_ms=100,
        family="extended",
        references=(
            _ref("direct"),
            _ref(
                "direct-100ms",
                Finding(CONNECT_SPEEDUP, "delay"),
                _saving("delay", "With 100 ms of SYN-ACK delay, injection"),
                headline=True,
            ),
        ),
        diff_reference="socket",
        # Beyond the thesis: the pool hides handshake delay.
        expectations=("socket-100ms.connect_us.median < direct-100ms.connect_us.median (mannwhitney, alpha=0.05)",),
    ),
    Scenario(
        "fallback",
        "socket",
        pool_up=False,
        expect_path="fallback",
        family="extended",
        references=(_ref("direct", _saving("fallback", "Falling back to direct because the pool is down")),),
        diff_reference="socket",
    ),
    Scenario(
        "socket-return",
        "socket",
        release=True,
        family="extended",
        references=(_ref("direct"), _ref("socket", _saving("release", "Handing the connection back to the pool"))),
        diff_reference="socket",
    ),
)

# An A/A control (issue 10): identical to direct, so any significant difference between the two is a
# false positive of this run's machine and statistics.
CONTROL_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "direct-aa",
        "direct",
        family="control",
        references=(_ref("direct", control=True),),
        diff_reference="socket",
        description="identical to direct: the run's false-positive check",
    ),
)

PG_SCENARIOS: tuple[Scenario, ...] = (
    Scenario("pg-direct", "direct", backend="pg", family="pg", delay_series="pg-direct", diff_reference="pg-socket"),
    Scenario(
        "pg-socket",
        "socket",
        backend="pg",
        family="pg",
        references=(
            _ref(
                "pg-direct",
                Finding(CONNECT_SPEEDUP, "pg"),
                _saving("pg", "On PostgreSQL, injecting an authenticated session"),
                headline=True,
            ),
        ),
        diff_reference="pg-socket",
        # The OLTP case: an injected, already authenticated session skips TCP, startup and SCRAM.
        expectations=("pg-socket.connect_us.median <= pg-direct.connect_us.median / 5",),
    ),
    Scenario(
        "pg-socket-nonet",
        "socket",
        network="none",
        backend="pg",
        family="pg",
        references=(
            _ref("pg-direct", _saving("pg", "On PostgreSQL without container networking, injection")),
            _ref("pg-socket"),
        ),
        diff_reference="pg-socket",
    ),
    Scenario(
        "pg-direct-10ms",
        "direct",
        delay_ms=10,
        backend="pg",
        family="pg",
        references=(_ref("pg-direct"),),
        delay_series="pg-direct",
        diff_reference="pg-socket",
    ),
)

# --- TLS 1.3 (issue 11): the thesis's blocker. The pool manager hands over a verified TLS session
# (fd + traffic keys); the cold function continues it instead of handshaking. Backend: a TLS echo
# server with a per-run CA; the harness checks one backend TLS session per cold start.
TLS_FAMILY = "tls"
TLS_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "tls-direct",
        "direct",
        transport="tls",
        family=TLS_FAMILY,
        delay_series="tls-direct",
        diff_reference="tls-socket",
        description="resolve + TCP + TLS 1.3 handshake with certificate verification in the cold function",
    ),
    Scenario(
        "tls-socket",
        "socket",
        transport="tls",
        family=TLS_FAMILY,
        references=(
            _ref(
                "tls-direct",
                Finding(CONNECT_SPEEDUP, "tls"),
                _saving("tls", "Injecting a verified TLS 1.3 session"),
                headline=True,
            ),
        ),
        diff_reference="tls-socket",
        # The thesis could not inject TLS; continuing an injected session must beat a cold handshake.
        expectations=("tls-socket.connect_us.median <= tls-direct.connect_us.median / 5",),
        description="TLS session handshaken by the pool manager, continued with the handed-over keys",
    ),
    Scenario(
        "tls-socket-nonet",
        "socket",
        network="none",
        transport="tls",
        family=TLS_FAMILY,
        references=(
            _ref(
                "tls-direct",
                _saving("tls", "Injecting a TLS 1.3 session into a function without networking"),
                headline=True,
            ),
            _ref("tls-socket"),
        ),
        diff_reference="tls-socket",
    ),
    Scenario(
        "tls-direct-10ms",
        "direct",
        delay_ms=10,
        transport="tls",
        family=TLS_FAMILY,
        references=(_ref("tls-direct"),),
        delay_series="tls-direct",
        diff_reference="tls-socket",
    ),
)

DELAY_SERIES: tuple[DelaySeries, ...] = (
    DelaySeries("direct", reference="socket", primary=True),
    DelaySeries("pg-direct", reference="pg-socket"),
    DelaySeries("tls-direct", reference="tls-socket"),
)

# Absolute gate rules of a run that sets none (ini bench_gate): generous limits on the thesis's pair.
DEFAULT_GATE = """\
socket.connect_us.median <= 5000
direct.connect_us.median <= 20000
"""

DEFAULT_BURST_SIZES: tuple[int, ...] = (1, 2, 4, 8)
BURST_FAMILY = "burst"
# Burst curves whose growth with N is a finding (thesis Fig. 2: serialised start-up).
BURST_SCALING_SERIES: tuple[str, ...] = ("direct",)


def burst_scenarios(sizes: Iterable[int] = DEFAULT_BURST_SIZES) -> tuple[Scenario, ...]:
    """The concurrency sweep: per size N, direct and injected-without-networking started N at once."""
    out: list[Scenario] = []
    for n in sizes:
        direct, nonet = f"burst-{n}-direct", f"burst-{n}-socket-nonet"

        def alone(label: str, n: int = n) -> tuple[Reference, ...]:
            # A burst of N is compared with the same curve started alone, if that ran.
            return (_ref(f"burst-1-{label}"),) if n != 1 else ()

        subject = (f"With {n} cold starts at once" if n > 1 else "Started one at a time") + (
            ", injection without networking"
        )
        out.append(
            Scenario(direct, "direct", burst=n, family=BURST_FAMILY, references=alone("direct"), burst_series="direct")
        )
        out.append(
            Scenario(
                nonet,
                "socket",
                network="none",
                burst=n,
                family=BURST_FAMILY,
                references=(*alone("socket-nonet"), _ref(direct, _saving("burst", subject), headline=True)),
                burst_series="socket-nonet",
            )
        )
    return tuple(out)


_BURST_ID = re.compile(r"^burst-(\d+)-")


class Catalogue:
    """An ordered set of scenarios (by id) plus the delay series; extensible at configure time."""

    def __init__(
        self,
        scenarios: Iterable[Scenario] = (),
        delay_series: Iterable[DelaySeries] = DELAY_SERIES,
        burst_scaling: Sequence[str] = BURST_SCALING_SERIES,
    ) -> None:
        self._scenarios: dict[str, Scenario] = {}
        self.delay_series: list[DelaySeries] = list(delay_series)
        self.burst_scaling: tuple[str, ...] = tuple(burst_scaling)
        self.extend(scenarios)

    # --- building --------------------------------------------------------------------------------
    def register(self, scenario: Scenario, *, replace: bool = False) -> Scenario:
        """Add one scenario; a second one with the same id is an error unless `replace`."""
        if not replace and scenario.id in self._scenarios:
            raise ValueError(f"scenario {scenario.id!r} is already in the catalogue")
        if not scenario.name or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_\-]*", scenario.name):
            raise ValueError(f"scenario name {scenario.name!r}: use letters, digits, '_' and '-'")
        self._scenarios[scenario.id] = scenario
        return scenario

    def extend(self, scenarios: Iterable[Scenario]) -> Catalogue:
        for s in scenarios:
            self.register(s)
        return self

    def add_delay_series(self, series: DelaySeries) -> None:
        self.delay_series.append(series)

    # --- reading ---------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Scenario]:
        return iter(self._scenarios.values())

    def __len__(self) -> int:
        return len(self._scenarios)

    def __contains__(self, scenario_id: object) -> bool:
        return scenario_id in self._scenarios

    @property
    def ids(self) -> list[str]:
        return list(self._scenarios)

    def get(self, scenario_id: str) -> Scenario | None:
        return self._scenarios.get(scenario_id)

    def by_id(self, scenario_id: str) -> Scenario:
        found = self._scenarios.get(scenario_id)
        if found is not None:
            return found
        m = _BURST_ID.match(scenario_id)  # any burst size, also one not in --bench-bursts
        if m:
            for s in burst_scenarios((int(m.group(1)),)):
                if s.id == scenario_id:
                    return s
        raise KeyError(f"unknown scenario {scenario_id!r}")

    def knows(self, scenario_id: str) -> bool:
        try:
            self.by_id(scenario_id)
        except KeyError:
            return False
        return True

    def family(self, name: str) -> list[Scenario]:
        return [s for s in self if s.family == name]

    def references_of(self, scenario_id: str, present: Sequence[str]) -> list[Reference]:
        """The declared references of a scenario that are present in the run (each once, never itself)."""
        s = self.get(scenario_id)
        if s is None:
            return []
        seen: set[str] = set()
        out = []
        for r in s.references:
            if r.scenario in present and r.scenario != scenario_id and r.scenario not in seen:
                seen.add(r.scenario)
                out.append(r)
        return out

    def expectations(self, ids: Iterable[str] | None = None) -> list[str]:
        """The declared bench_expect texts, in catalogue order (of the given scenarios, or all)."""
        chosen = set(ids) if ids is not None else None
        return [t for s in self if chosen is None or s.id in chosen for t in s.expectations]

    def declared(self, scenario_id: str) -> dict[str, Any] | None:
        s = self.get(scenario_id) or (self.by_id(scenario_id) if self.knows(scenario_id) else None)
        return s.declared() if s is not None else None


def default_catalogue(burst_sizes: Iterable[int] = DEFAULT_BURST_SIZES) -> Catalogue:
    return Catalogue(
        THESIS_SCENARIOS
        + EXTENDED_SCENARIOS
        + CONTROL_SCENARIOS
        + PG_SCENARIOS
        + TLS_SCENARIOS
        + burst_scenarios(burst_sizes)
    )


# The cold-start test's parameters (bursts have their own test, sized by --bench-bursts).
def single_start_ids(catalogue: Catalogue) -> list[str]:
    return [s.id for s in catalogue if s.family != BURST_FAMILY]


def burst_ids(catalogue: Catalogue) -> list[str]:
    return [s.id for s in catalogue if s.family == BURST_FAMILY]


def all_scenarios(burst_sizes: tuple[int, ...] = DEFAULT_BURST_SIZES) -> tuple[Scenario, ...]:
    return tuple(default_catalogue(burst_sizes))


def by_id(scenario_id: str, burst_sizes: tuple[int, ...] = DEFAULT_BURST_SIZES) -> Scenario:
    return default_catalogue(burst_sizes).by_id(scenario_id)


def parse_burst_sizes(text: str) -> tuple[int, ...]:
    """'1,2,4,8' -> (1, 2, 4, 8); a clear ValueError for anything else."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"--bench-bursts expects comma-separated positive integers, got {text!r}") from None
    if not sizes or any(n < 1 or n > 64 for n in sizes):
        raise ValueError(f"--bench-bursts sizes must be between 1 and 64, got {text!r}")
    return sizes


__all__ = [
    "CONTROL",
    "HEADLINE",
    "Catalogue",
    "DelaySeries",
    "Finding",
    "Reference",
    "Scenario",
]
