from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from coldstart_bench.measure.runner import ColdStartResult, parse_function_record, to_sample
from coldstart_bench.samples import read_samples_csv, write_samples_csv


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


def test_language_and_oci_runtime_are_separate_columns(tmp_path: Path) -> None:
    rec = _record(runtime="node v18.19.0")
    result = ColdStartResult("abc", 0, json.dumps(rec), "", EVENTS, rec)
    s = to_sample(result, scenario="node-socket@runsc", iteration=0, delay_ms=0, network="bridge", oci_runtime="runsc")
    assert (s.language_runtime, s.oci_runtime) == ("node v18.19.0", "runsc")
    path = tmp_path / "samples.csv"
    write_samples_csv(path, [s])
    header = path.read_text().splitlines()[0].split(",")
    assert "language_runtime" in header and "oci_runtime" in header and "runtime" not in header
    (back,) = read_samples_csv(path)
    assert (back.language_runtime, back.oci_runtime, back.connect_us) == ("node v18.19.0", "runsc", 1900.0)


def test_older_samples_csv_with_a_runtime_column_still_loads(tmp_path: Path) -> None:
    # Written before the column was split: "runtime" held the language runtime, no oci_runtime.
    path = tmp_path / "samples.csv"
    path.write_text(
        "scenario,iteration,mode,container_id,ok,connect_us,runtime\n"
        "node-direct,0,direct,abc,1,1900.0,node v18.19.0\n"
        "direct,1,direct,def,0,,\n"
    )
    first, second = read_samples_csv(path)
    assert (first.scenario, first.language_runtime, first.oci_runtime, first.ok) == (
        "node-direct",
        "node v18.19.0",
        "",
        True,
    )
    assert first.connect_us == 1900.0
    assert second.language_runtime == "" and not second.ok and math.isnan(second.connect_us)
    assert not hasattr(first, "runtime")
