"""The context-manager shape the testbed's parts share: ``with Part(...) as p`` starts it, leaving
stops it, and a start that fails half-way is stopped too, so nothing it created is left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Self

# Set by a test run (tests/conftest.py) and inherited by every process it starts: the run finds what
# it left behind by it (processes by their environment, temporary directories by their name).
RUN_MARKER = "CSB_TEST_RUN"


def run_temp_dir(prefix: str) -> Path:
    """A fresh directory under /tmp (short paths: Unix sockets live in them), named with the run's marker."""
    tag = os.environ.get(RUN_MARKER, "")
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{tag}-" if tag else prefix, dir="/tmp"))


def stop_group(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
    """Stop a process started with ``start_new_session=True`` and everything it started: ``sig`` to
    the process, SIGKILL to its whole group after ``timeout``, and SIGKILL to whatever of the group
    outlived it (children it forked)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode


class StartStop:
    """Mix-in for parts with ``start() -> self`` and an idempotent ``stop()``."""

    def start(self) -> Any:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            started: Self = self.start()
            return started
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
