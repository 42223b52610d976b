"""Report sections of the language table and the three-way PostgreSQL comparison (summary.json
`languages` and `pg_proxy`, analyse/wire_tables.py), as (heading, headers, rows, caption) that
content.py turns into its blocks."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple


class Section(NamedTuple):
    heading: str
    headers: list[str]
    rows: list[list[str]]
    caption: str


def num(x: Any, digits: int = 1) -> str:
    if not isinstance(x, int | float) or not math.isfinite(x):
        return "–"
    return f"{x:,.{digits}f}"


def _ms(us: Any) -> Any:
    return us / 1000.0 if isinstance(us, int | float) else None


def language_section(summary: Mapping[str, Any]) -> Section | None:
    rows = summary.get("languages") or []
    if not rows:
        return None
    return Section(
        "Languages: direct vs injected connection",
        [
            "language", "arm", "how it gets the connection", "network", "paths", "connect µs (median)",
            "direct arm", "direct connect µs", "speed-up", "runtime start-up µs", "start→main ms (inj / direct)",
            "lifecycle ms (inj / direct)",
        ],
        [
            [
                str(r["language"]), str(r["scenario"]), str(r["how"]), str(r["network"]),
                ", ".join(f"{k}: {v}" for k, v in (r.get("paths") or {}).items()),
                num(r["connect_us"], 0), str(r.get("direct") or "–"), num(r["direct_connect_us"], 0),
                f"{num(r['connect_speedup'], 1)}×" if r.get("connect_speedup") else "–",
                num(r["runtime_startup_us"], 0),
                f"{num(r['start_to_ready_ms'])} / {num(r['direct_start_to_ready_ms'])}",
                f"{num(r['lifecycle_ms'])} / {num(r['direct_lifecycle_ms'])}",
            ]
            for r in rows
        ],
        "Medians. runtime start-up = the entrypoint's exec to the function's main (fd-3 arms only); "
        "start→main = docker start to the function's main, for every arm.",
    )  # fmt: skip


def pg_proxy_section(summary: Mapping[str, Any]) -> Section | None:
    rows = summary.get("pg_proxy") or []
    if not rows:
        return None

    def sessions(r: Mapping[str, Any]) -> str:
        if r.get("server_sessions") is None:
            return "–"
        return f"{r['server_sessions']} / {r['cold_starts_counted']} ({num(r['sessions_per_cold_start'], 2)})"

    return Section(
        "PostgreSQL: direct, PgBouncer, injected session",
        [
            "arm", "route", "network", "connect ms", "lifecycle ms", "SASL auth ms", "transaction's first statement ms",
            "query p50 µs", "first point read µs", "server sessions / cold starts (per start)",
        ],
        [
            [
                str(r["scenario"]), str(r["route"]), str(r["network"]), num(_ms(r["connect_us"]), 2),
                num(r["lifecycle_ms"]), num(_ms(r["auth_us"]), 2), num(_ms(r["first_query_us"]), 2),
                num(r["query_p50_us"], 0), num(r["query_first_us"], 0), sessions(r),
            ]
            for r in rows
        ],
        "Medians per cold start. Server sessions: growth of PostgreSQL's own session counter "
        "(pg_stat_database.sessions) across each arm's blocks, warm-ups included, after the pool manager's "
        "refills settled; an injected session costs its refill, PgBouncer reuses its server connections.",
    )  # fmt: skip


def wire_sections(summary: Mapping[str, Any]) -> list[Section]:
    return [s for s in (language_section(summary), pg_proxy_section(summary)) if s is not None]
