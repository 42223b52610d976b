"""Raw samples: one row per measured cold start, kept verbatim so any statistic can be recomputed."""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .phases import DERIVED, PHASES, STAMPS

# The phases of connect_us for socket scenarios, in the order the acquire runs them.
ACQUIRE_PHASES: tuple[str, ...] = (
    "uds_connect_us",
    "request_write_us",
    "reply_recv_us",
    "reply_parse_us",
    "sock_wrap_us",
)
# Those phases (connect_us = their sum + call overhead) and the function's work outside the connect
# clock (components/function.py, components/prefetch.py): record fields copied into the Sample as
# they are (µs, bytes; NaN when the function did not report them).
ACQUIRE_RECORD_FIELDS: tuple[str, ...] = (
    *ACQUIRE_PHASES,
    "fd_check_us",
    "protocol_import_us",
    "prefetch_us",
    "prefetch_bytes",
)
# Metrics that statistics, gates and reports know about (all numeric columns of a Sample).
PRIMARY_METRICS: tuple[str, ...] = ("connect_us", "lifecycle_ms")
PHASE_METRICS: tuple[str, ...] = (
    "resolve_us",
    "handshake_us",
    "fd_recv_us",
    "request_rtt_us",
    "startup_us",
    "auth_us",
    "first_query_us",
    "import_us",
    "create_to_start_ms",
    "start_to_ready_ms",
    "start_to_die_ms",
    "die_to_destroy_ms",
    *ACQUIRE_RECORD_FIELDS,
)
# Other languages and the PostgreSQL arms: the runtime's start-up, per-query latency.
RUNTIME_QUERY_METRICS: tuple[str, ...] = ("runtime_startup_us", "runtime_init_us", "query_first_us", "query_p50_us")
# TLS phases (transport "tls"): the cold function's ssl import, context and handshake (direct),
# or continuing the injected session (socket: import, libcrypto binding, keys).
TLS_METRICS: tuple[str, ...] = ("ssl_import_us", "tls_context_us", "tls_handshake_us", "tls_setup_us")
# The phases named alike in every arm and what follows from them (coldstart_bench/phases.py).
FOOTING_METRICS: tuple[str, ...] = PHASES + DERIVED
ALL_METRICS: tuple[str, ...] = PRIMARY_METRICS + PHASE_METRICS + RUNTIME_QUERY_METRICS + TLS_METRICS + FOOTING_METRICS
# The function's raw CLOCK_REALTIME stamps (ns; 0 when it did not report one).
STAMP_FIELDS: tuple[str, ...] = STAMPS


@dataclass
class Sample:
    """One measured cold start. Timings not applicable to a mode are NaN (empty in CSV)."""

    scenario: str  # scenario id (`<name>` or `<name>@<runtime>`)
    iteration: int  # index of the measured cold start within its scenario
    mode: str  # "direct" | "socket" | "fallback" (what the function actually did)
    container_id: str  # the function container's id (every cold start a distinct container)
    ok: bool  # the cold start succeeded and every check on it held
    connect_us: float = math.nan  # time to a usable connection, inside the function
    lifecycle_ms: float = math.nan  # container create -> destroy, from Docker's events
    resolve_us: float = math.nan  # direct: getaddrinfo of the backend's name
    handshake_us: float = math.nan  # direct: TCP connect
    fd_recv_us: float = math.nan  # socket: acquire over the pool manager's Unix socket
    request_rtt_us: float = math.nan  # request sent and its verified echo read
    startup_us: float = math.nan  # PostgreSQL: startup message -> first reply, AuthenticationOk -> ReadyForQuery
    auth_us: float = math.nan  # PostgreSQL: SASL exchange incl. the client's PBKDF2
    first_query_us: float = math.nan  # PostgreSQL: first statement of the transaction
    import_us: float = math.nan  # PostgreSQL direct: importing the driver in the cold process
    create_to_start_ms: float = math.nan  # Docker create -> start event
    start_to_ready_ms: float = math.nan  # Docker start -> the function's main() entered
    start_to_die_ms: float = math.nan  # Docker start -> die: the part the connection method can change
    die_to_destroy_ms: float = math.nan  # Docker die -> destroy (removal)
    delay_ms: float = 0.0  # configured SYN-ACK delay of the scenario
    network: str = "bridge"  # container network mode of the function
    oci_runtime: str = ""  # OCI runtime of the function container (runc, runsc; "" the engine's default)
    interfaces: str = ""  # network interfaces seen inside the function, ";"-separated
    path: str = ""  # connection path reported by the function: direct | socket | fallback
    block: int = 0  # randomised block index when interleaved, else 0
    burst: int = 1  # cold starts started at once
    t_create_ns: int = 0  # docker "create" event time, for ordering / drift plots
    error: str = ""  # why the cold start failed (empty when ok)
    # Runtimes and relay: how the connection arrived ("fd" injected, "relay" an AF_UNIX
    # end the manager relays; "" direct), and every echo round trip of the cold start, ";"-separated
    # (request_rtt_us is their median).
    handoff: str = ""
    request_rtts_us: str = ""
    # --- languages and the PostgreSQL arms ---
    language_runtime: str = ""  # the function's language runtime as it reports itself (e.g. "node v18.19.0")
    runtime_startup_us: float = math.nan  # entrypoint's exec -> the function's main (fd3 arms only)
    runtime_init_us: float = math.nan  # Node.js: its own bootstrap -> main
    query_first_us: float = math.nan  # PostgreSQL: the first of the point reads after the transfer
    query_p50_us: float = math.nan  # PostgreSQL: median of those point reads (per-query latency)
    # Acquire phases and the work around the connect clock (see PHASE_METRICS).
    uds_connect_us: float = math.nan
    request_write_us: float = math.nan
    reply_recv_us: float = math.nan
    reply_parse_us: float = math.nan
    sock_wrap_us: float = math.nan
    fd_check_us: float = math.nan
    protocol_import_us: float = math.nan
    prefetch_us: float = math.nan
    prefetch_bytes: float = math.nan
    position: int = -1  # index of the cold start within its block, warm-ups included (-1: unknown)
    after_switch: str = ""  # the testbed change that opened its block ("" none; ";"-separated kinds)
    # TLS (transport "tls"); NaN / "" / -1 for a plain TCP connection.
    ssl_import_us: float = math.nan
    tls_context_us: float = math.nan
    tls_handshake_us: float = math.nan
    tls_setup_us: float = math.nan
    tls_version: str = ""
    tls_cipher_suite: str = ""
    tls_path: str = ""  # handshake (direct) | record_layer | ktls (injected) | relay (the manager keeps the keys)
    tls_server_seq: int = -1  # read sequence number at hand-out
    tls_client_seq: int = -1
    library: str = ""  # the client code the connection ran through, as the function names it
    # One clock origin and the same phases in every arm (docs/phases.md, coldstart_bench/phases.py).
    t_entry_ns: int = 0  # process entry: the fd-3 entrypoint's first instruction (CLOCK_REALTIME ns)
    t_main_ns: int = 0  # the function's main (CLOCK_REALTIME ns)
    t_connected_ns: int = 0  # it holds a usable, checked connection (CLOCK_REALTIME ns)
    t_first_reply_ns: int = 0  # the first reply arrived (CLOCK_REALTIME ns)
    t_end_ns: int = 0  # done, connection closed (CLOCK_REALTIME ns)
    library_load_us: float = math.nan  # loading what the connection needs: driver, ssl/libcrypto, pool client
    acquire_us: float = math.nan  # resolve + TCP connect, or the pool acquire with the fd's receipt
    verify_us: float = math.nan  # the check of the socket (fd) or session
    session_setup_us: float = math.nan  # TLS handshake/continuation, PostgreSQL startup + SCRAM, or adoption
    first_request_us: float = math.nan  # the first request's round trip
    pre_main_us: float = math.nan  # connection work done before main (the fd-3 entrypoint's acquire + check)
    runtime_start_us: float = math.nan  # entry -> main, minus pre_main_us
    time_to_first_reply_us: float = math.nan  # main -> first reply, plus pre_main_us
    function_us: float = math.nan  # main -> end, plus pre_main_us: in-function time
    connection_total_us: float = math.nan  # library_load_us + connect_us

    def value(self, metric: str) -> float:
        return float(getattr(self, metric))


SAMPLE_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Sample))
_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(Sample)}


def _format(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def _parse(name: str, raw: str) -> object:
    kind = _FIELD_TYPES[name]
    if kind == "bool":
        return raw.strip().lower() in ("1", "true", "yes")
    if kind == "int":
        return int(raw) if raw else 0
    if kind == "float":
        return float(raw) if raw else math.nan
    return raw


def write_samples_csv(path: Path, samples: Iterable[Sample]) -> None:
    """Write all samples; written to a temp file then renamed so a crash never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(SAMPLE_FIELDS)
        for sample in samples:
            writer.writerow(_format(getattr(sample, name)) for name in SAMPLE_FIELDS)
    tmp.replace(path)


def append_sample_csv(path: Path, sample: Sample) -> None:
    """Append one row (header first if the file is new): measured data survives a crash mid-run."""
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(SAMPLE_FIELDS)
        writer.writerow(_format(getattr(sample, name)) for name in SAMPLE_FIELDS)


# Columns renamed since older samples.csv files were written: old name -> current name. A file
# that has both keeps the current one.
_RENAMED_COLUMNS = {"runtime": "language_runtime"}


def _current_names(row: dict[str, str]) -> dict[str, str]:
    current = {k: v for k, v in row.items() if k not in _RENAMED_COLUMNS}
    for old, new in _RENAMED_COLUMNS.items():
        if old in row:
            current.setdefault(new, row[old])
    return current


def read_samples_csv(path: Path) -> list[Sample]:
    """Read samples.csv, older files too (renamed columns mapped, missing ones at their default)."""
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return [
            Sample(**{k: _parse(k, v or "") for k, v in _current_names(row).items() if k in _FIELD_TYPES})  # type: ignore[arg-type]
            for row in reader
        ]


@dataclass
class ScenarioSamples:
    """All samples of one scenario, with helpers to pull a metric as a clean float list."""

    scenario: str
    samples: list[Sample] = field(default_factory=list)

    def values(self, metric: str, ok_only: bool = True) -> list[float]:
        out = []
        for s in self.samples:
            if ok_only and not s.ok:
                continue
            v = s.value(metric)
            if not math.isnan(v):
                out.append(v)
        return out

    def values_by_block(self, metric: str) -> dict[int, list[float]]:
        """The successful cold starts' values of a metric, per block (NaN left out, as in values)."""
        out: dict[int, list[float]] = {}
        for s in self.samples:
            v = s.value(metric)
            if s.ok and not math.isnan(v):
                out.setdefault(s.block, []).append(v)
        return out


def group_by_scenario(samples: Sequence[Sample]) -> dict[str, ScenarioSamples]:
    """Group in first-seen order (the run order), which reports keep."""
    groups: dict[str, ScenarioSamples] = {}
    for s in samples:
        groups.setdefault(s.scenario, ScenarioSamples(s.scenario)).samples.append(s)
    return groups
