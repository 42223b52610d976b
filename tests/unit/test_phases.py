"""The phases named alike in every arm: their arithmetic and the samples.csv columns they fill."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from coldstart_bench import phases
from coldstart_bench.measure.runner import ColdStartResult, to_sample
from coldstart_bench.samples import ALL_METRICS, SAMPLE_FIELDS, read_samples_csv, write_samples_csv

T0 = 1_700_000_000_000_000_000
EVENTS = {"create": T0 - 50_000_000, "start": T0 - 10_000_000, "die": T0 + 30_000_000, "destroy": T0 + 40_000_000}


def fd3_record(**kw: object) -> dict[str, object]:
    """An fd-3 arm: the entrypoint acquired (400 µs) and checked (30 µs) before exec, main at +5 ms."""
    rec: dict[str, object] = {
        "ok": True, "mode": "fd3", "path": "fd3", "library": "fd3-entrypoint",
        "t_entry_ns": T0, "t_main_ns": T0 + 5_000_000, "t_connected_ns": T0 + 5_200_000,
        "t_first_reply_ns": T0 + 5_300_000, "t_end_ns": T0 + 6_000_000,
        "library_load_us": 50.0, "acquire_us": 400.0, "verify_us": 45.0, "session_setup_us": 20.0,
        "connect_us": 465.0, "first_request_us": 90.0, "pre_main_us": 430.0, "fd_recv_us": 400.0,
    }  # fmt: skip
    rec.update(kw)
    return rec


def test_connection_work_before_main_is_not_runtime_start() -> None:
    d = phases.derived(fd3_record())
    assert d["runtime_start_us"] == pytest.approx(5000.0 - 430.0)
    assert d["time_to_first_reply_us"] == pytest.approx(300.0 + 430.0)
    assert d["function_us"] == pytest.approx(1000.0 + 430.0)
    assert d["connection_total_us"] == pytest.approx(50.0 + 465.0)


def test_in_process_arm_has_nothing_before_main() -> None:
    rec = fd3_record(mode="socket", path="socket", pre_main_us=0.0)
    d = phases.derived(rec)
    assert d["runtime_start_us"] == pytest.approx(5000.0)
    assert d["time_to_first_reply_us"] == pytest.approx(300.0)


def test_missing_stamps_give_nan() -> None:
    d = phases.derived(fd3_record(t_first_reply_ns=None, t_entry_ns=0))
    assert math.isnan(d["runtime_start_us"]) and math.isnan(d["time_to_first_reply_us"])
    assert d["function_us"] == pytest.approx(1430.0)
    assert math.isnan(phases.derived(fd3_record(library_load_us=None))["connection_total_us"])


def test_check_accepts_a_consistent_record() -> None:
    assert phases.check(fd3_record()) == []
    fallback = fd3_record(path="fallback", socket_attempt_us=500.0, connect_us=965.0)
    assert phases.check(fallback) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"connect_us": 400.0}, "connect_us"),
        ({"verify_us": None}, "missing or negative"),
        ({"session_setup_us": -3.0}, "missing or negative"),
        ({"t_connected_ns": T0 + 7_000_000}, "t_connected_ns after t_first_reply_ns"),
        ({"t_end_ns": None}, "missing stamps: t_end_ns"),
    ],
)
def test_check_names_what_is_inconsistent(change: dict[str, object], problem: str) -> None:
    problems = phases.check(fd3_record(**change))
    assert problems and any(problem in p for p in problems), problems


def test_samples_keep_stamps_phases_and_derived_columns(tmp_path: Path) -> None:
    rec = fd3_record()
    result = ColdStartResult("c1", 0, json.dumps(rec), "", EVENTS, rec)
    s = to_sample(result, scenario="socket-fd3", iteration=0, delay_ms=0, network="bridge")
    assert (s.t_entry_ns, s.t_main_ns, s.t_end_ns) == (T0, T0 + 5_000_000, T0 + 6_000_000)
    assert s.t_first_reply_ns == T0 + 5_300_000 and s.library == "fd3-entrypoint"
    assert (s.library_load_us, s.acquire_us, s.verify_us, s.session_setup_us) == (50.0, 400.0, 45.0, 20.0)
    assert s.runtime_start_us == pytest.approx(4570.0) and s.connection_total_us == pytest.approx(515.0)
    for name in (*phases.STAMPS, *phases.PHASES, *phases.DERIVED, "library"):
        assert name in SAMPLE_FIELDS
    for name in (*phases.PHASES, *phases.DERIVED):
        assert name in ALL_METRICS  # statistics and gates know them
    path = tmp_path / "samples.csv"
    write_samples_csv(path, [s])
    header = path.read_text().splitlines()[0].split(",")
    assert {"t_entry_ns", "library_load_us", "time_to_first_reply_us"} <= set(header)
    (back,) = read_samples_csv(path)
    assert back.t_first_reply_ns == s.t_first_reply_ns and back.function_us == pytest.approx(s.function_us)


def test_a_record_without_the_new_fields_leaves_them_empty() -> None:
    rec = {"ok": True, "mode": "direct", "path": "direct", "connect_us": 1900.0, "t_main_ns": T0}
    result = ColdStartResult("c2", 0, json.dumps(rec), "", EVENTS, rec)
    s = to_sample(result, scenario="x", iteration=0, delay_ms=0, network="bridge")
    assert s.t_entry_ns == 0 and math.isnan(s.library_load_us) and math.isnan(s.connection_total_us)
    assert s.t_main_ns == T0 and math.isnan(s.runtime_start_us)
