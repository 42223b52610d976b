"""Nothing left behind: a test run marks itself, and at its end no process it started is still
running and no temporary directory named with its mark is left (a pytest plug-in, loaded by
tests/conftest.py; ``-p tests.support.leftovers`` loads it elsewhere).

The mark is an environment variable (``coldstart_bench.measure.lifecycle.RUN_MARKER``) every
process started by the run inherits, daemons included (PostgreSQL through pg_ctl, PgBouncer);
temporary directories carry it in their names (``lifecycle.run_temp_dir``). Containers are not
processes of the run: the engine's run labels and sweeper take care of them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from coldstart_bench.measure.lifecycle import RUN_MARKER

MARKS_RUN = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    # The controller marks the run; xdist workers and every process a test starts inherit the mark.
    if RUN_MARKER not in os.environ:
        os.environ[RUN_MARKER] = secrets.token_hex(4)
        config.stash[MARKS_RUN] = True  # this session checks at its end (not workers, not pytester's)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """At the end of the run (in the controller, after the workers are gone): no process started by
    the run and no temporary directory named with its mark may be left. Leftovers are listed, then
    removed, and the run fails."""
    if not session.config.stash.get(MARKS_RUN, False):
        return
    left = leftovers(os.environ[RUN_MARKER])
    if not any(left.values()):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"process {pid}: {cmd}" for pid, cmd in left["processes"]] + [f"directory {d}" for d in left["dirs"]]
    if reporter is not None:
        reporter.write_sep("=", "left behind by this run", red=True)
        for line in lines:
            reporter.write_line(line)
    for pid, _cmd in left["processes"]:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for d in left["dirs"]:
        shutil.rmtree(d, ignore_errors=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def leftovers(mark: str, grace_s: float = 5.0) -> dict[str, list[Any]]:
    """Processes carrying ``RUN_MARKER=mark`` in their environment (other than this one), and
    directories under /tmp named with ``mark``; processes get ``grace_s`` to finish exiting."""
    deadline = time.monotonic() + grace_s
    while True:
        procs = marked_processes(mark)
        if not procs or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    dirs = sorted(str(p) for p in Path("/tmp").glob(f"*{mark}*"))
    return {"processes": procs, "dirs": dirs}


def marked_processes(mark: str) -> list[tuple[int, str]]:
    needle = f"{RUN_MARKER}={mark}".encode()
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            if needle not in environ.split(b"\0"):
                continue
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":
                continue  # exited, waiting to be reaped by its parent
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        found.append((int(entry), cmd.strip()[:200]))
    return found
