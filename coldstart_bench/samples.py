"""Raw samples: one row per measured cold start, kept verbatim so any statistic can be recomputed."""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
)
# TLS phases (transport "tls"): the cold function's ssl import, context and handshake (direct),
# or continuing the injected session (socket: import, libcrypto binding, keys).
TLS_METRICS: tuple[str, ...] = ("ssl_import_us", "tls_context_us", "tls_handshake_us", "tls_setup_us")
ALL_METRICS: tuple[str, ...] = PRIMARY_METRICS + PHASE_METRICS + TLS_METRICS


@dataclass
class Sample:
    """One measured cold start. Timings not applicable to a mode are NaN (empty in CSV)."""

    scenario: str
    iteration: int
    mode: str  # "direct" | "socket" | "fallback" (what the function actually did)
    container_id: str
    ok: bool
    connect_us: float = math.nan
    lifecycle_ms: float = math.nan
    resolve_us: float = math.nan
    handshake_us: float = math.nan
    fd_recv_us: float = math.nan
    request_rtt_us: float = math.nan
    startup_us: float = math.nan  # PostgreSQL: startup message -> first reply, AuthenticationOk -> ReadyForQuery
    auth_us: float = math.nan  # PostgreSQL: SASL exchange incl. the client's PBKDF2
    first_query_us: float = math.nan  # PostgreSQL: first statement of the transaction
    import_us: float = math.nan  # PostgreSQL direct: importing the driver in the cold process
    create_to_start_ms: float = math.nan
    start_to_ready_ms: float = math.nan
    start_to_die_ms: float = math.nan
    die_to_destroy_ms: float = math.nan
    delay_ms: float = 0.0  # configured SYN-ACK delay of the scenario
    network: str = "bridge"  # container network mode of the function
    interfaces: str = ""  # network interfaces seen inside the function, ";"-separated
    path: str = ""  # connection path reported by the function: direct | socket | fallback
    block: int = 0  # randomised block index when interleaved, else 0
    burst: int = 1  # cold starts started at once
    t_create_ns: int = 0  # docker "create" event time, for ordering / drift plots
    error: str = ""
    # TLS (transport "tls"); NaN / "" / -1 for a plain TCP connection.
    ssl_import_us: float = math.nan
    tls_context_us: float = math.nan
    tls_handshake_us: float = math.nan
    tls_setup_us: float = math.nan
    tls_version: str = ""
    tls_cipher_suite: str = ""
    tls_path: str = ""  # handshake (direct) | record_layer | ktls (injected)
    tls_server_seq: int = -1  # read sequence number at hand-out
    tls_client_seq: int = -1

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


def read_samples_csv(path: Path) -> list[Sample]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return [
            Sample(**{k: _parse(k, v or "") for k, v in row.items() if k in _FIELD_TYPES})  # type: ignore[arg-type]
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


def group_by_scenario(samples: Sequence[Sample]) -> dict[str, ScenarioSamples]:
    """Group in first-seen order (the run order), which reports keep."""
    groups: dict[str, ScenarioSamples] = {}
    for s in samples:
        groups.setdefault(s.scenario, ScenarioSamples(s.scenario)).samples.append(s)
    return groups
