"""Two tables summary.json carries beside the comparisons, built from the scenarios'
statistics and their declared metadata only (never from an id):

- `languages`: every injected echo arm that is not the in-process Python acquire (another language,
  or the fd-3 entrypoint), plus the in-process arms those declare as references; each next to the
  direct arm it references, with the runtime's start-up.
- `pg_proxy`: every zero-delay PostgreSQL arm of a run that has a proxied one (direct, PgBouncer
  over TCP or its Unix socket, injected session): connection, lifecycle, per-query latency and
  the server sessions each cost the database (environment `pg_sessions_by_scenario`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

IN_PROCESS_HOW = "acquires in-process over the pool manager's Unix socket (SCM_RIGHTS)"


def _declared(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    return entry.get("declared") or {}


def _median(entry: Mapping[str, Any] | None, metric: str) -> float | None:
    if not entry:
        return None
    value = (entry.get(metric) or {}).get("median")
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _ratio(slow: float | None, fast: float | None) -> float | None:
    return slow / fast if slow is not None and fast and fast > 0 else None


def _single_start(d: Mapping[str, Any]) -> bool:
    return not d.get("delay_ms") and int(d.get("burst") or 1) == 1 and not d.get("release")


def _injected_echo(d: Mapping[str, Any]) -> bool:
    return d.get("mode") == "socket" and d.get("backend", "echo") == "echo" and d.get("pool_up", True)


def _language_arm(d: Mapping[str, Any]) -> bool:
    other = d.get("language", "python") != "python" or d.get("entrypoint", "in-process") != "in-process"
    return _injected_echo(d) and _single_start(d) and other


def _first_reference(scenarios: Mapping[str, Any], name: str, mode: str) -> str | None:
    for ref in _declared(scenarios[name]).get("references") or []:
        other = ref.get("scenario")
        if other in scenarios and other != name and _declared(scenarios[other]).get("mode") == mode:
            return str(other)
    return None


def language_rows(scenarios: Mapping[str, Any]) -> list[dict[str, Any]]:
    names = [n for n, e in scenarios.items() if _language_arm(_declared(e))]
    for name in list(names):
        ref = _first_reference(scenarios, name, "socket")
        if ref is not None and ref not in names and _injected_echo(_declared(scenarios[ref])):
            names.append(ref)
    rows = []
    for name in names:
        entry = scenarios[name]
        d = _declared(entry)
        direct = _first_reference(scenarios, name, "direct")
        direct_entry = scenarios.get(direct) if direct else None
        injected_connect, direct_connect = _median(entry, "connect_us"), _median(direct_entry, "connect_us")
        rows.append(
            {
                "scenario": name,
                "language": d.get("language", "python"),
                "entrypoint": d.get("entrypoint", "in-process"),
                "network": d.get("network", entry.get("network", "")),
                "how": d.get("description") or IN_PROCESS_HOW,
                "paths": dict(entry.get("paths") or {}),
                "runtime_startup_us": _median(entry, "runtime_startup_us"),
                "runtime_init_us": _median(entry, "runtime_init_us"),
                "start_to_ready_ms": _median(entry, "start_to_ready_ms"),
                "connect_us": injected_connect,
                "lifecycle_ms": _median(entry, "lifecycle_ms"),
                "direct": direct,
                "direct_connect_us": direct_connect,
                "direct_start_to_ready_ms": _median(direct_entry, "start_to_ready_ms"),
                "direct_lifecycle_ms": _median(direct_entry, "lifecycle_ms"),
                "connect_speedup": _ratio(direct_connect, injected_connect),
            }
        )
    return rows


def _route(d: Mapping[str, Any]) -> str:
    if d.get("proxy"):
        return str(d["proxy"])
    return "injected session" if d.get("mode") == "socket" else "direct"


def pg_proxy_rows(scenarios: Mapping[str, Any], environment: Mapping[str, Any]) -> list[dict[str, Any]]:
    arms = [n for n, e in scenarios.items() if _declared(e).get("backend") == "pg" and _single_start(_declared(e))]
    if not any(_declared(scenarios[n]).get("proxy") for n in arms):
        return []
    sessions = environment.get("pg_sessions_by_scenario") or {}
    rows = []
    for name in arms:
        entry, d = scenarios[name], _declared(scenarios[name])
        tally = sessions.get(name) or {}
        cold_starts = int(tally.get("cold_starts") or 0)
        opened = tally.get("sessions")
        rows.append(
            {
                "scenario": name,
                "route": _route(d),
                "network": d.get("network", entry.get("network", "")),
                "connect_us": _median(entry, "connect_us"),
                "lifecycle_ms": _median(entry, "lifecycle_ms"),
                "auth_us": _median(entry, "auth_us"),
                "first_query_us": _median(entry, "first_query_us"),
                "query_first_us": _median(entry, "query_first_us"),
                "query_p50_us": _median(entry, "query_p50_us"),
                "server_sessions": opened,
                "cold_starts_counted": cold_starts,
                "sessions_per_cold_start": opened / cold_starts if opened is not None and cold_starts else None,
            }
        )
    return rows
