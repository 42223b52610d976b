"""The thesis's Table 1 re-measured: how long a TCP connection and a TLS 1.3 connection take to set
up (mean, p95), from the cold starts of this run, plus where a continued (injected) TLS session's
time goes.

TCP: the `handshake_us` (connect()) of the thesis's direct scenario, or, when the run has none,
of the TLS direct scenario (the same TCP connect under its TLS handshake). TLS 1.3: per sample,
TCP connect + TLS handshake with certificate verification (`handshake_us + tls_handshake_us`),
as the thesis's Table 1 counts it (its `ssl` import and context set-up are shown apart).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..catalogue import Catalogue, Scenario
from ..samples import Sample

# The thesis's Table 1 (two EC2 hosts), µs.
THESIS_TABLE1 = {"tcp_mean_us": 673.0, "tls_mean_us": 5996.0}


def _describe(values: Sequence[float]) -> dict[str, Any]:
    arr = np.array([v for v in values if math.isfinite(v)], dtype=float)
    if not arr.size:
        return {"n": 0, "mean": None, "p95": None, "median": None}
    return {
        "n": int(arr.size),
        "mean": float(np.mean(arr)),
        "p95": float(np.percentile(arr, 95)),
        "median": float(np.median(arr)),
    }


def _plain(s: Scenario | None) -> bool:
    return s is not None and s.mode == "direct" and s.delay_ms == 0 and s.burst == 1 and s.network != "none"


def tls_connect_table(samples: Sequence[Sample], catalogue: Catalogue) -> dict[str, Any] | None:
    """summary.json's `tls` entry, or None when the run has no TLS direct cold starts."""
    by_scenario: dict[str, list[Sample]] = {}
    for s in samples:
        if s.ok:
            by_scenario.setdefault(s.scenario, []).append(s)
    tls_direct = [sid for sid in by_scenario if _plain(sc := catalogue.get(sid)) and sc and sc.transport == "tls"]
    tls_socket = [
        sid
        for sid in by_scenario
        if (sc := catalogue.get(sid)) is not None and sc.transport == "tls" and sc.mode == "socket"
    ]
    if not tls_direct:
        return None
    tcp_source = [
        sid
        for sid in by_scenario
        if _plain(sc := catalogue.get(sid)) and sc and sc.transport == "tcp" and sc.thesis_role == "direct"
    ] or tls_direct
    tls_rows = [s for sid in tls_direct for s in by_scenario[sid]]
    tcp = _describe([s.handshake_us for sid in tcp_source for s in by_scenario[sid]])
    tls = _describe([s.handshake_us + s.tls_handshake_us for s in tls_rows])
    ratio = tls["mean"] / tcp["mean"] if tcp["mean"] and tls["mean"] else None
    out: dict[str, Any] = {
        "table1": {
            "tcp_connect_us": tcp | {"scenarios": tcp_source, "metric": "handshake_us"},
            "tls13_connect_us": tls | {"scenarios": tls_direct, "metric": "handshake_us + tls_handshake_us"},
            "tls_over_tcp_mean": ratio,
            "thesis": dict(
                THESIS_TABLE1, tls_over_tcp_mean=THESIS_TABLE1["tls_mean_us"] / THESIS_TABLE1["tcp_mean_us"]
            ),
        },
        "direct_phases_us": {
            metric: _describe([s.value(metric) for s in tls_rows])
            for metric in ("resolve_us", "handshake_us", "ssl_import_us", "tls_context_us", "tls_handshake_us")
        },
    }
    if tls_socket:
        rows = [s for sid in tls_socket for s in by_scenario[sid]]
        out["injected_phases_us"] = {
            metric: _describe([s.value(metric) for s in rows]) for metric in ("fd_recv_us", "tls_setup_us")
        }
        out["injected_scenarios"] = tls_socket
        out["paths"] = sorted({s.tls_path for s in rows})
        out["cipher_suites"] = sorted({s.tls_cipher_suite for s in rows + tls_rows if s.tls_cipher_suite})
    return out
