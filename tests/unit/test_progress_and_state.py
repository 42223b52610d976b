from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from coldstart_bench.progress import Progress, format_eta
from coldstart_bench.run_state import ReportWriteError, RunState, new_run_dir
from coldstart_bench.samples import Sample, read_samples_csv


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_progress_reports_done_total_and_eta_and_throttles() -> None:
    lines: list[str] = []
    clock = FakeClock()
    p = Progress(10, lines.append, interval=5.0, clock=clock)
    clock.t = 2.0
    p.tick("socket")
    assert lines == ["[coldstart-bench] socket: 1/10 cold starts (10%), ETA 0:18"]
    clock.t = 4.0
    p.tick("socket")  # within the interval: not printed
    assert len(lines) == 1
    clock.t = 20.0
    for _ in range(8):
        p.tick("socket")
    assert lines[-1].startswith("[coldstart-bench] socket: 10/10 cold starts (100%)")


def test_format_eta() -> None:
    assert format_eta(0) == "0:00"
    assert format_eta(75) == "1:15"
    assert format_eta(3725) == "1:02:05"


def test_run_dir_and_latest_link(tmp_path: Path) -> None:
    now = datetime(2026, 11, 29, 15, 0, 0, tzinfo=UTC)
    first = new_run_dir(tmp_path, now)
    second = new_run_dir(tmp_path, now)
    assert first.name == "20261129T150000Z"
    assert second.name == "20261129T150000Z-1"
    assert (tmp_path / "latest").resolve() == second.resolve()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_report_root_is_a_clear_error(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ReportWriteError, match="--bench-report-dir"):
            new_run_dir(tmp_path / "reports")
    finally:
        tmp_path.chmod(0o700)


def test_report_root_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "reports"
    blocker.write_text("not a directory")
    with pytest.raises(ReportWriteError, match="cannot create the report directory"):
        new_run_dir(blocker)


def test_samples_are_on_disk_as_soon_as_measured(tmp_path: Path) -> None:
    state = RunState(report_root=tmp_path, run_id="r1")
    state.add(Sample("socket", 0, "socket", "c0", True, connect_us=200.0, lifecycle_ms=310.0))
    state.add(Sample("socket", 1, "socket", "c1", True, connect_us=210.0, lifecycle_ms=320.0))
    rows = read_samples_csv(state.samples_path)
    assert [r.container_id for r in rows] == ["c0", "c1"]
    assert rows[1].lifecycle_ms == 320.0


def test_full_disk_keeps_samples_and_rescues_them(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    state = RunState(report_root=tmp_path, run_id="r2")
    run_dir = state.ensure_dir()
    (run_dir / "samples.csv").symlink_to("/dev/full")  # every write fails with ENOSPC
    state.add(Sample("direct", 0, "direct", "c0", True, connect_us=900.0))
    assert state.samples and state.write_errors
    assert "No space left" in state.write_errors[0]
    # the run directory stays unusable (samples.csv cannot be replaced): rescue goes elsewhere
    (run_dir / "samples.csv").unlink()
    (run_dir / "samples.csv").mkdir()
    (run_dir / "samples.csv" / "keep").write_text("x")
    rescued = state.rescue_samples()
    assert rescued is not None and rescued.parent != run_dir
    assert read_samples_csv(rescued)[0].connect_us == 900.0


def test_a_report_root_lost_during_the_run_keeps_samples_and_says_where(tmp_path: Path) -> None:
    root = tmp_path / "reports"
    root.write_text("someone replaced the directory with a file\n")
    told: list[str] = []
    state = RunState(report_root=root, run_id="lost", notify=told.append)
    state.add(Sample("socket", 0, "socket", "c0", True, connect_us=900.0))  # no exception
    state.add(Sample("socket", 1, "socket", "c1", True, connect_us=901.0))
    assert state.rescue_path is not None and state.rescue_path.parent.parent != tmp_path
    assert [s.connect_us for s in read_samples_csv(state.rescue_path)] == [900.0, 901.0]  # on disk already
    assert any(str(state.rescue_path) in line for line in told) and any(str(root) in line for line in told)
    assert state.rescue_samples() == state.rescue_path


def test_check_report_root_creates_nothing(tmp_path: Path) -> None:
    from coldstart_bench.run_state import check_report_root

    check_report_root(tmp_path / "new" / "reports")
    assert not (tmp_path / "new").exists()
    (tmp_path / "f").write_text("x")
    with pytest.raises(ReportWriteError, match="not a directory"):
        check_report_root(tmp_path / "f" / "reports")
