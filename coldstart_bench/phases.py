"""The phases every function reports, named alike in every arm, and what follows from them.

Each function (components/function.py, components/c/function.c, components/node/function.js,
components/pg_function.py) records raw CLOCK_REALTIME stamps and its phases in µs:

    t_entry_ns        process entry: the fd-3 entrypoint's first instruction (every arm of the
                      project's own functions starts through it), else the earliest stamp the
                      runtime can take
    t_main_ns         the function's main
    t_connected_ns    it holds a usable connection
    t_first_reply_ns  the first reply arrived (echo, or the first statement's result)
    t_end_ns          done, connection closed

    library_load_us   what the connection needs loaded: a driver, ssl/libcrypto, the pool client
    acquire_us        resolve + TCP connect, or the pool acquire with the fd's receipt
    verify_us         the check of the socket (fd) or session
    session_setup_us  TLS handshake or continuation, PostgreSQL startup + SCRAM, or the adoption
    first_request_us  the first request's round trip
    pre_main_us       the part of the connection done before main (the fd-3 entrypoint's
                      acquire and check), 0 when none

connect_us = acquire_us + verify_us + session_setup_us (plus socket_attempt_us when a failed
injection fell back to a direct connection). The derived columns below put every arm on the same
clock: work an entrypoint did before main is connection work, not runtime start-up.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

STAMPS: tuple[str, ...] = ("t_entry_ns", "t_main_ns", "t_connected_ns", "t_first_reply_ns", "t_end_ns")
CONNECT_PHASES: tuple[str, ...] = ("acquire_us", "verify_us", "session_setup_us")
PHASES: tuple[str, ...] = ("library_load_us", *CONNECT_PHASES, "first_request_us", "pre_main_us")
DERIVED: tuple[str, ...] = ("runtime_start_us", "time_to_first_reply_us", "function_us", "connection_total_us")


def _num(record: Mapping[str, Any], key: str) -> float:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _stamp(record: Mapping[str, Any], key: str) -> int | None:
    value = record.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def derived(record: Mapping[str, Any]) -> dict[str, float]:
    """runtime_start_us (entry -> main, minus connection work done before main),
    time_to_first_reply_us (main -> first reply, plus that work), function_us (main -> end, plus
    that work) and connection_total_us (library_load_us + connect_us); NaN where a part is missing."""
    pre = _num(record, "pre_main_us")
    pre = 0.0 if math.isnan(pre) else pre
    entry, main = _stamp(record, "t_entry_ns"), _stamp(record, "t_main_ns")
    first, end = _stamp(record, "t_first_reply_ns"), _stamp(record, "t_end_ns")
    out = {name: math.nan for name in DERIVED}
    if entry is not None and main is not None:
        out["runtime_start_us"] = (main - entry) / 1e3 - pre
    if main is not None and first is not None:
        out["time_to_first_reply_us"] = (first - main) / 1e3 + pre
    if main is not None and end is not None:
        out["function_us"] = (end - main) / 1e3 + pre
    out["connection_total_us"] = _num(record, "library_load_us") + _num(record, "connect_us")
    return out


def check(record: Mapping[str, Any], tolerance_us: float = 1.0) -> list[str]:
    """What is inconsistent in a successful record's phases and stamps (empty when nothing)."""
    problems: list[str] = []
    stamps = [(name, _stamp(record, name)) for name in STAMPS]
    missing = [name for name, value in stamps if value is None]
    if missing:
        problems.append("missing stamps: " + ", ".join(missing))
    present = [(name, value) for name, value in stamps if value is not None]
    for (a, va), (b, vb) in itertools.pairwise(present):
        if va > vb:  # type: ignore[operator]
            problems.append(f"{a} after {b}")
    parts = [_num(record, name) for name in ("library_load_us", *CONNECT_PHASES)]
    if any(math.isnan(p) or p < 0 for p in parts):
        named = zip(("library_load_us", *CONNECT_PHASES), parts, strict=True)
        problems.append("a phase is missing or negative: " + ", ".join(f"{n}={p}" for n, p in named))
    else:
        attempt = _num(record, "socket_attempt_us")
        expected = sum(parts[1:]) + (0.0 if math.isnan(attempt) else attempt)
        connect = _num(record, "connect_us")
        if math.isnan(connect) or abs(connect - expected) > tolerance_us:
            problems.append(f"connect_us {connect} != acquire + verify + session set-up (+ attempt) {expected:.1f}")
    return problems
