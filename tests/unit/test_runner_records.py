from __future__ import annotations

import json
import math

import pytest

from coldstart_bench.measure.runner import ColdStartResult, parse_function_record, to_sample


def _record(**kw: object) -> dict[str, object]:
    rec: dict[str, object] = {
        "ok": True, "mode": "direct", "path": "direct", "error": None, "t_main_ns": 1_000_050_000_000,
        "resolve_us": 1500.0, "handshake_us": 400.0, "fd_recv_us": None, "connect_us": 1900.0,
        "request_rtt_us": 120.0, "interfaces": ["lo", "eth0"],
    }  # fmt: skip
    rec.update(kw)
    return rec


EVENTS = {"create": 1_000_000_000_000, "start": 1_000_040_000_000, "die": 1_000_200_000_000,
          "destroy": 1_000_230_000_000}  # fmt: skip


def test_parse_exactly_one_json_line() -> None:
    assert parse_function_record('\n{"ok": true}\n') == {"ok": True}
    with pytest.raises(ValueError, match="exactly one JSON line"):
        parse_function_record('{"ok": true}\n{"ok": true}\n')
    with pytest.raises(ValueError):
        parse_function_record("Traceback ...")
    with pytest.raises(ValueError, match="not a JSON object"):
        parse_function_record("[1, 2]")


def test_sample_phases_come_from_events_and_record() -> None:
    result = ColdStartResult("abc", 0, json.dumps(_record()), "", EVENTS, _record())
    s = to_sample(result, scenario="direct", iteration=3, delay_ms=0, network="bridge")
    assert s.ok and s.path == "direct" and s.interfaces == "lo;eth0"
    assert s.lifecycle_ms == pytest.approx(230.0)
    assert s.create_to_start_ms == pytest.approx(40.0)
    assert s.start_to_ready_ms == pytest.approx(10.0)
    assert s.start_to_die_ms == pytest.approx(160.0)
    assert s.die_to_destroy_ms == pytest.approx(30.0)
    assert s.connect_us == 1900.0 and math.isnan(s.fd_recv_us)


def test_failed_function_is_a_failed_sample() -> None:
    rec = _record(ok=False, error="echo mismatch")
    result = ColdStartResult("abc", 1, json.dumps(rec), "", EVENTS, rec, error="function reported failure")
    s = to_sample(result, scenario="direct", iteration=0, delay_ms=0, network="bridge")
    assert not s.ok and "failure" in s.error


def test_missing_events_give_nan_not_garbage() -> None:
    result = ColdStartResult("abc", 0, "", "", {"create": 1}, _record(), error="events missing")
    s = to_sample(result, scenario="direct", iteration=0, delay_ms=0, network="bridge")
    assert math.isnan(s.lifecycle_ms) and not s.ok
