"""Processes started by the harness or its tests are stopped with their children, and a test run
finds (and fails on) any process or temporary directory it left behind."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from coldstart_bench.measure.lifecycle import RUN_MARKER, run_temp_dir, stop_group
from coldstart_bench.measure.pgbouncer import LocalPgBouncer
from tests.support.leftovers import marked_processes
from tests.support.pg_cluster import LocalCluster

HAVE_PGBOUNCER = Path("/usr/sbin/pgbouncer").exists()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_stop_group_stops_the_children_a_process_started(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    # A shell that starts a child and ignores the polite signal, as a wrapper such as runuser may.
    script = f"trap '' TERM; sleep 60 & echo $! > {pidfile}; wait"
    proc = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child = int(pidfile.read_text())
    assert alive(child)
    stop_group(proc, timeout=1.0)
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(child), "the wrapper's child outlived it"


@pytest.mark.skipif(not HAVE_PGBOUNCER, reason="pgbouncer is not installed (apt-get install pgbouncer)")
def test_host_pgbouncer_is_gone_after_stop(cluster: LocalCluster) -> None:
    bouncer = LocalPgBouncer(cluster, pool_size=1).start()
    assert bouncer.proc is not None and bouncer.base is not None
    pid, base = bouncer.proc.pid, bouncer.base
    assert Path(f"/proc/{pid}/exe").resolve().name == "pgbouncer"  # its own pid, not a wrapper's
    assert os.environ[RUN_MARKER] in base.name
    bouncer.stop()
    assert not alive(pid)
    assert not any("pgbouncer" in cmd and str(base) in cmd for _pid, cmd in marked_processes(os.environ[RUN_MARKER]))
    assert not base.exists()


LEAKY_TEST = """
import subprocess
from coldstart_bench.measure.lifecycle import run_temp_dir

def test_leaks():
    run_temp_dir("csb-leak-")
    subprocess.Popen(["sleep", "60"], start_new_session=True)
"""


def test_a_run_that_leaves_a_process_or_directory_behind_fails(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = str(Path(__file__).resolve().parents[2])
    monkeypatch.delenv(RUN_MARKER)  # the inner run marks itself
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])))
    pytester.makepyfile(test_leaky=LEAKY_TEST)
    result = pytester.runpytest_subprocess("-p", "tests.support.leftovers", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*left behind by this run*", "process *sleep 60*", "directory /tmp/csb-leak-*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    leaked = [line.split()[-1] for line in result.stdout.lines if line.startswith("directory /tmp/csb-leak-")]
    assert leaked and not any(Path(d).exists() for d in leaked)  # removed after being reported
    assert not any(cmd == "sleep 60" for _pid, cmd in marked_processes(leaked[0].split("-")[2]))


def test_run_temp_dir_carries_the_mark() -> None:
    d = run_temp_dir("csb-mark-")
    try:
        assert os.environ[RUN_MARKER] in d.name and d.parent == Path("/tmp")
    finally:
        d.rmdir()
