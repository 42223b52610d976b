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
RUNTIME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class RuntimeConfigError(ValueError):
    """A bad --bench-runtimes value."""


def parse_runtimes(value: str | None) -> tuple[str, ...]:
    """``"runc,runsc, crun"`` -> ``("runc", "runsc", "crun")``; empty or None -> ``("runc",)``.

    Order is kept (the first is the default runtime of the run), duplicates dropped.
    """
    if value is None or not value.strip():
        return (DEFAULT_RUNTIME,)
    names: list[str] = []
    for raw in value.split(","):
        name = raw.strip()
        if not name:
            raise RuntimeConfigError(f"--bench-runtimes {value!r}: empty runtime name")
        if not RUNTIME_NAME.match(name):
            raise RuntimeConfigError(
                f"--bench-runtimes {value!r}: {name!r} is not a runtime name (letters, digits, '.', '_', '-')"
            )
        if name not in names:
            names.append(name)
    return tuple(names)


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
    # Measured in every run that measures the scenario, selected or not (`-k pgbouncer` brings
    # the arms it is compared with): the comparison the scenario exists for is never missing.
    pulled: bool = False

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
    # Round-trip time added to every packet between function and backend (the database at a network
    # distance; netem, else the NFQUEUE sidecar delaying everything the backend sends); 0 = none.
    rtt_ms: float = 0.0
    proxy: str = ""  # a proxy between function and backend: "" | "pgbouncer" (TCP) | "pgbouncer-unix"
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
            | ({"pulled": True} if r.pulled else {})
            for r in self.references
        ]
        d["expectations"] = list(self.expectations)
        return d


# What two arms may differ in and still compare connection methods: how the function gets its
# connection (mode, the path it reports, entrypoint, hand-off, proxy, pool down, release) and the
# bookkeeping of the study. Every other field is a factor of its own; a new axis counts as one.
CONNECTION_METHOD_FIELDS = frozenset({"mode", "expect_path", "entrypoint", "handoff", "proxy", "pool_up", "release"})
BOOKKEEPING_FIELDS = frozenset(
    {
        "name",
        "family",
        "references",
        "delay_series",
        "diff_reference",
        "burst_series",
        "thesis_role",
        "expectations",
        "description",
    }
)
# How summary.json names a factor (the field name when not listed).
FACTOR_NAMES: dict[str, str] = {"network": "network_mode", "delay_ms": "delay"}


def differs_in(a: Scenario, b: Scenario) -> tuple[str, ...]:
    """The factors other than the connection method in which two scenarios differ (in field order):
    empty when a comparison of the two isolates the connection method."""
    out = []
    for f in dataclasses.fields(Scenario):
        if f.name in CONNECTION_METHOD_FIELDS or f.name in BOOKKEEPING_FIELDS:
            continue
        if getattr(a, f.name) != getattr(b, f.name):
            out.append(FACTOR_NAMES.get(f.name, f.name))
    return tuple(out)


def method_differs(a: Scenario, b: Scenario) -> bool:
    """Whether the two scenarios get their connection differently."""
    return any(getattr(a, name) != getattr(b, name) for name in sorted(CONNECTION_METHOD_FIELDS))


def _ref(
    scenario: str, *findings: Finding, headline: bool = False, control: bool = False, pulled: bool = False
) -> Reference:
    return Reference(scenario, headline=headline, control=control, findings=tuple(findings), pulled=pulled)


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
            # Section 6.2: injected cold starts are more predictable (Levene p = 0.0055). Judged, as the
            # predictability finding is, by the Brown–Forsythe test, robust to the skew of latencies.
            "socket.lifecycle_ms.variance < direct.lifecycle_ms.variance (brown-forsythe, alpha=0.05)",
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

# An A/A control: identical to direct, so any significant difference between the two is a
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

# --- Runtimes and the relay hand-off ----------------------------------------------------------------
# The relay: the function gets one end of an AF_UNIX socketpair and the manager relays bytes to the
# pooled connection. What the extra hop costs per request (request_rtt_us) is read against injection;
# on runtimes that drop injected TCP fds (gVisor) it is the only way to a pooled connection.
RELAY = "relay"
RUNTIME_FAMILY = "runtime"
RELAY_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "socket-relay",
        "socket",
        handoff=RELAY,
        family=RUNTIME_FAMILY,
        references=(
            _ref("direct"),
            _ref("socket", _saving("relay", "Relaying instead of injecting the connection"), headline=True),
        ),
        diff_reference="socket",
    ),
    Scenario(
        "socket-relay-nonet",
        "socket",
        network="none",
        handoff=RELAY,
        family=RUNTIME_FAMILY,
        references=(
            _ref("direct"),
            _ref("socket-nonet", _saving("relay", "Without networking, relaying instead of injecting"), headline=True),
        ),
        diff_reference="socket-nonet",
    ),
)


def runtime_twins(scenarios: Iterable[Scenario], runtimes: Iterable[str]) -> tuple[Scenario, ...]:
    """Every scenario again on each runtime other than runc, with the id `<name>@<runtime>`.

    A twin is compared with its runc original and with the twins of its own references; the
    thesis's expectations, delay and burst series stay with the originals."""
    base = [s for s in scenarios if s.runtime == DEFAULT_RUNTIME and s.family != BURST_FAMILY]
    names = {s.name for s in base}
    out: list[Scenario] = []
    for runtime in runtimes:
        if runtime == DEFAULT_RUNTIME:
            continue

        def on(name: str, runtime: str = runtime) -> str:
            return f"{name}@{runtime}" if name in names else name

        for s in base:
            refs = (_ref(s.name), *(_ref(on(r.scenario), headline=r.headline) for r in s.references))
            out.append(
                dataclasses.replace(
                    s,
                    runtime=runtime,
                    references=refs,
                    diff_reference=on(s.diff_reference) if s.diff_reference else "",
                    delay_series="",
                    thesis_role="",
                    expectations=(),
                )
            )
    return tuple(out)


# --- Languages and the proxy users pick instead ----------------------------------------------------
# Language axis: the same echo function in Node.js and C beside the Python one. Entrypoint axis:
# "fd3" = components/c/fd3_entrypoint.c acquires the connection before the runtime starts and execs
# the function with it at fd 3 (LISTEN_FDS=1), path "fd3". socket-fd3 runs the Python function
# through the entrypoint, to price it against the in-process acquire of socket: the same image,
# the same number of requests and the same exec chain (every arm starts through the entrypoint,
# the others with --no-acquire).
LANG_FAMILY = "lang"
PG_PROXY_FAMILY = "pg-proxy"

LANG_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "node-direct",
        "direct",
        language="node",
        family=LANG_FAMILY,
        diff_reference="node-socket",
        description="Node.js connects by itself (dns.lookup, net.connect)",
    ),
    Scenario(
        "node-socket",
        "socket",
        language="node",
        entrypoint="fd3",
        expect_path="fd3",
        family=LANG_FAMILY,
        references=(
            _ref(
                "node-direct",
                Finding(CONNECT_SPEEDUP, "node"),
                _saving("node", "In Node.js, injection through the fd-3 entrypoint"),
                headline=True,
                pulled=True,
            ),
        ),
        diff_reference="node-socket",
        description="Node.js adopts the inherited fd 3: new net.Socket({fd: 3})",
        expectations=("node-socket.connect_us.median <= node-direct.connect_us.median / 3",),
    ),
    Scenario(
        "node-socket-nonet",
        "socket",
        network="none",
        language="node",
        entrypoint="fd3",
        expect_path="fd3",
        family=LANG_FAMILY,
        references=(
            _ref("node-direct", _saving("node", "In Node.js without container networking, injection"), pulled=True),
            _ref("node-socket"),
        ),
        diff_reference="node-socket",
        description="Node.js adopts the inherited fd 3, no container networking",
    ),
    Scenario(
        "c-direct",
        "direct",
        language="c",
        family=LANG_FAMILY,
        diff_reference="c-socket",
        description="C connects by itself (getaddrinfo, connect)",
    ),
    Scenario(
        "c-socket",
        "socket",
        language="c",
        entrypoint="fd3",
        expect_path="fd3",
        family=LANG_FAMILY,
        references=(
            _ref(
                "c-direct",
                Finding(CONNECT_SPEEDUP, "c"),
                _saving("c", "In C, injection through the fd-3 entrypoint"),
                headline=True,
                pulled=True,
            ),
        ),
        diff_reference="c-socket",
        description="C uses the inherited fd 3 as it is",
    ),
    Scenario(
        "c-socket-nonet",
        "socket",
        network="none",
        language="c",
        entrypoint="fd3",
        expect_path="fd3",
        family=LANG_FAMILY,
        references=(_ref("c-direct", pulled=True), _ref("c-socket")),
        diff_reference="c-socket",
        description="C uses the inherited fd 3, no container networking",
    ),
    Scenario(
        "socket-fd3",
        "socket",
        entrypoint="fd3",
        expect_path="fd3",
        family=LANG_FAMILY,
        references=(
            _ref(
                "socket",
                _saving("entrypoint", "The fd-3 entrypoint instead of the in-process acquire"),
                headline=True,
                pulled=True,
            ),
            _ref("direct", pulled=True),
        ),
        diff_reference="socket",
        description="Python adopts the inherited fd 3: socket.socket(fileno=3)",
    ),
)

# PgBouncer in front of the same PostgreSQL (SCRAM on both sides), beside connecting directly and
# an injected session; each pulls both into the run so `-k pgbouncer` is the three-way comparison.
PG_PROXY_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "pg-pgbouncer",
        "direct",
        backend="pg",
        proxy="pgbouncer",
        family=PG_PROXY_FAMILY,
        references=(
            _ref(
                "pg-direct",
                Finding(CONNECT_SPEEDUP, "pgbouncer"),
                _saving("pgbouncer", "PgBouncer in front of PostgreSQL (TCP)"),
                headline=True,
                pulled=True,
            ),
            _ref(
                "pg-socket", _saving("pgbouncer", "Going through PgBouncer instead of an injected session"), pulled=True
            ),
        ),
        diff_reference="pg-socket",
        description="the function authenticates to PgBouncer over TCP; PgBouncer pools server sessions",
    ),
    Scenario(
        "pg-pgbouncer-unix",
        "direct",
        network="none",
        backend="pg",
        proxy="pgbouncer-unix",
        family=PG_PROXY_FAMILY,
        references=(
            _ref(
                "pg-direct",
                Finding(CONNECT_SPEEDUP, "pgbouncer"),
                _saving("pgbouncer", "PgBouncer over a bind-mounted Unix socket"),
                headline=True,
                pulled=True,
            ),
            _ref(
                "pg-socket", _saving("pgbouncer", "PgBouncer's Unix socket instead of an injected session"), pulled=True
            ),
            _ref("pg-pgbouncer"),
        ),
        diff_reference="pg-socket",
        description="the function authenticates to PgBouncer over its bind-mounted Unix socket, no networking",
    ),
)

# --- TLS 1.3: the thesis's blocker. The pool manager hands over a verified TLS session
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
        "tls-relay",
        "socket",
        transport="tls",
        handoff=RELAY,
        family=TLS_FAMILY,
        references=(
            _ref(
                "tls-direct",
                Finding(CONNECT_SPEEDUP, "tls-relay"),
                _saving("tls", "Relaying a TLS 1.3 session the manager keeps the keys of"),
                headline=True,
            ),
            _ref("tls-socket"),
        ),
        diff_reference="tls-socket",
        # No crypto in the function at all: plaintext over a socketpair end.
        expectations=("tls-relay.connect_us.median <= tls-direct.connect_us.median / 15",),
        description="the manager terminates TLS and relays plaintext over a node-local socketpair",
    ),
    Scenario(
        "tls-relay-nonet",
        "socket",
        network="none",
        transport="tls",
        handoff=RELAY,
        family=TLS_FAMILY,
        references=(
            _ref("tls-direct", _saving("tls", "Relaying a TLS 1.3 session into a function without networking")),
            _ref("tls-relay"),
            _ref("tls-socket-nonet"),
        ),
        diff_reference="tls-socket",
        description="the TLS relay into a function without container networking",
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

# PostgreSQL over TLS (the managed-database default): SSLRequest, TLS 1.3 with verification, startup
# and SCRAM. Direct: all of it in the cold function. Injected: the manager did all of it; the
# function continues the session with the handed-over keys (record layer; kernel TLS where the kernel
# has it) or talks plaintext to the manager's relay, which keeps the keys.
PG_TLS_FAMILY = "pg-tls"
PG_TLS_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "pg-tls-direct",
        "direct",
        backend="pg",
        transport="tls",
        family=PG_TLS_FAMILY,
        references=(_ref("pg-direct"),),
        diff_reference="pg-tls-socket",
        description="SSLRequest, TLS 1.3 handshake with verification, startup and SCRAM in the cold function",
    ),
    Scenario(
        "pg-tls-socket",
        "socket",
        backend="pg",
        transport="tls",
        family=PG_TLS_FAMILY,
        references=(
            _ref(
                "pg-tls-direct",
                Finding(CONNECT_SPEEDUP, "pg-tls"),
                _saving("pg-tls", "On PostgreSQL over TLS, injecting the authenticated TLS session"),
                headline=True,
                pulled=True,
            ),
        ),
        diff_reference="pg-tls-socket",
        description="the manager's TLS session at ReadyForQuery, continued with the handed-over keys",
    ),
    Scenario(
        "pg-tls-relay",
        "socket",
        backend="pg",
        transport="tls",
        handoff=RELAY,
        family=PG_TLS_FAMILY,
        references=(
            _ref(
                "pg-tls-direct",
                Finding(CONNECT_SPEEDUP, "pg-tls"),
                _saving("pg-tls", "On PostgreSQL over TLS, relaying a session the manager keeps the keys of"),
                headline=True,
                pulled=True,
            ),
            _ref("pg-tls-socket"),
        ),
        diff_reference="pg-tls-socket",
        # No crypto, no startup, no SCRAM in the function: the best injected arm.
        expectations=("pg-tls-relay.connect_us.median <= pg-tls-direct.connect_us.median / 10",),
        description="the manager terminates TLS for an authenticated session and relays plaintext",
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


# --- A database at a network distance (--bench-rtt): the direct and injected arms again with a
# round-trip time added to every packet between function and backend. Direct pays it once per round
# trip of its connect (TCP, TLS, SSLRequest, startup, SCRAM); an injected arm pays none before its
# first reply. Each variant is compared with its own arm without the distance (pulled into the run).
RTT_FAMILY = "rtt"
# arm -> the direct arm an injected one is compared with at the same distance ("" for a direct arm)
RTT_ARMS: dict[str, str] = {
    "direct": "",
    "socket": "direct",
    "pg-direct": "",
    "pg-socket": "pg-direct",
    "pg-tls-direct": "",
    "pg-tls-socket": "pg-tls-direct",
    "pg-tls-relay": "pg-tls-direct",
}


def rtt_label(rtt_ms: float) -> str:
    """10.0 -> "10ms", 0.5 -> "0.5ms"."""
    return f"{rtt_ms:g}ms"


def rtt_id(name: str, rtt_ms: float) -> str:
    return f"{name}-rtt-{rtt_label(rtt_ms)}"


def parse_rtts(text: str) -> tuple[float, ...]:
    """'1ms,10ms' (or '1,10') -> (1.0, 10.0); a clear ValueError for anything else."""
    out: list[float] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        number = part[:-2] if part.endswith("ms") else part
        try:
            value = float(number)
        except ValueError:
            raise ValueError(f"--bench-rtt expects round-trip times like 1ms,10ms, got {part!r}") from None
        if not 0 < value <= 1000:
            raise ValueError(f"--bench-rtt values must be > 0 and <= 1000 ms, got {part!r}")
        if value not in out:
            out.append(value)
    return tuple(out)


def rtt_scenarios(base: Iterable[Scenario], rtts: Iterable[float]) -> tuple[Scenario, ...]:
    """Per round-trip time, a `<arm>-rtt-<N>ms` twin of each arm of RTT_ARMS present in `base`."""
    arms = {s.name: s for s in base if s.name in RTT_ARMS and s.runtime == DEFAULT_RUNTIME}
    out: list[Scenario] = []
    for rtt in rtts:
        label = rtt_label(rtt)
        for name, s in arms.items():
            direct = RTT_ARMS[name]
            refs = [_ref(name, pulled=True)]
            if direct in arms:
                refs.append(
                    _ref(
                        rtt_id(direct, rtt),
                        Finding(CONNECT_SPEEDUP, f"rtt-{label}"),
                        _saving(f"rtt-{label}", f"With {label} to the backend, {name}"),
                        headline=True,
                        pulled=True,
                    )
                )
            diff = s.diff_reference if s.diff_reference in arms else ""
            out.append(
                dataclasses.replace(
                    s,
                    name=rtt_id(name, rtt),
                    rtt_ms=rtt,
                    delay_ms=0.0,
                    family=RTT_FAMILY,
                    references=tuple(refs),
                    delay_series="",
                    diff_reference=rtt_id(diff, rtt) if diff else "",
                    thesis_role="",
                    expectations=(),
                    description=f"{name} with {label} added to every round trip between function and backend",
                )
            )
    return tuple(out)


_BURST_ID = re.compile(r"^burst-(\d+)-")
_RTT_ID = re.compile(r"^(?P<arm>.+)-rtt-(?P<ms>\d+(?:\.\d+)?)ms$")


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
        m = _RTT_ID.match(scenario_id)  # any round-trip time, also one not in --bench-rtt
        if m and m.group("arm") in self._scenarios:
            for s in rtt_scenarios(self, (float(m.group("ms")),)):
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

    def pulled_in(self, selected: Sequence[str]) -> list[Scenario]:
        """Scenarios the selected ones pull into the run (references marked `pulled`, transitively)
        that are not selected themselves, in the order first pulled."""
        chosen = set(selected)
        out: list[Scenario] = []
        pending = list(selected)
        while pending:
            s = self.get(pending.pop(0))
            for r in s.references if s is not None else ():
                if r.pulled and r.scenario not in chosen and r.scenario in self:
                    chosen.add(r.scenario)
                    out.append(self._scenarios[r.scenario])
                    pending.append(r.scenario)
        return out

    def expectations(self, ids: Iterable[str] | None = None) -> list[str]:
        """The declared bench_expect texts, in catalogue order (of the given scenarios, or all)."""
        chosen = set(ids) if ids is not None else None
        return [t for s in self if chosen is None or s.id in chosen for t in s.expectations]

    def declared(self, scenario_id: str) -> dict[str, Any] | None:
        s = self.get(scenario_id) or (self.by_id(scenario_id) if self.knows(scenario_id) else None)
        return s.declared() if s is not None else None


def default_catalogue(
    burst_sizes: Iterable[int] = DEFAULT_BURST_SIZES,
    runtimes: Iterable[str] = (DEFAULT_RUNTIME,),
    rtts: Iterable[float] = (),
) -> Catalogue:
    singles = (
        THESIS_SCENARIOS
        + EXTENDED_SCENARIOS
        + CONTROL_SCENARIOS
        + PG_SCENARIOS
        + RELAY_SCENARIOS
        + LANG_SCENARIOS
        + PG_PROXY_SCENARIOS
        + TLS_SCENARIOS
        + PG_TLS_SCENARIOS
    )
    return Catalogue(
        singles + rtt_scenarios(singles, rtts) + burst_scenarios(burst_sizes) + runtime_twins(singles, runtimes)
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
    "differs_in",
    "method_differs",
]
