"""The round trips each arm pays before its first reply, from the `--bench-rtt` variants.

With a round-trip time added to every packet between function and backend, a connect that needs k
round trips to the backend takes about k x RTT longer. Per variant: `round_trips` = median
connect_us / RTT, rounded (what the connect costs in round trips at that distance), and, when the
arm also ran without the distance, what the distance added (`added_us`, and in round trips).
Direct PostgreSQL over TLS pays TCP 1 + SSLRequest 1 + TLS 1 + startup/SCRAM 3; an injected arm
none (its connect is local).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from ..catalogue import Catalogue
from ..samples import Sample


def _median_connect(samples: Sequence[Sample]) -> float | None:
    values = [s.connect_us for s in samples if s.ok and math.isfinite(s.connect_us)]
    return float(statistics.median(values)) if values else None


def round_trip_rows(samples: Sequence[Sample], catalogue: Catalogue) -> list[dict[str, Any]]:
    """summary.json's `round_trips`: one row per scenario with a round-trip time, in run order."""
    by_scenario: dict[str, list[Sample]] = {}
    for s in samples:
        by_scenario.setdefault(s.scenario, []).append(s)
    rows: list[dict[str, Any]] = []
    for sid, rows_of in by_scenario.items():
        scenario = catalogue.get(sid) or (catalogue.by_id(sid) if catalogue.knows(sid) else None)
        if scenario is None or scenario.rtt_ms <= 0:
            continue
        median = _median_connect(rows_of)
        if median is None:
            continue
        rtt_us = scenario.rtt_ms * 1000.0
        arm = scenario.references[0].scenario if scenario.references else ""
        base = _median_connect(by_scenario.get(arm, []))
        row: dict[str, Any] = {
            "scenario": sid,
            "arm": arm,
            "mode": scenario.mode,
            "rtt_ms": scenario.rtt_ms,
            "connect_us_median": round(median, 1),
            "round_trips": round(median / rtt_us),
            "base_connect_us_median": None if base is None else round(base, 1),
            "added_us": None if base is None else round(median - base, 1),
            "added_round_trips": None if base is None else round((median - base) / rtt_us, 2),
        }
        rows.append(row)
    return rows
