"""The components as host processes (echo server, pool manager), for benchmarks and tests that
measure them without containers: readiness line, CPU time, open fds, RSS, clean stop."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .lifecycle import run_temp_dir, stop_group

REPO = Path(__file__).resolve().parents[2]


def read_json_line(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """The first JSON line a process prints (its readiness line), within `timeout` seconds."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise TimeoutError(f"no JSON line within {timeout}s (got {buf!r})")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"process exited before its ready line (got {buf!r}, rc={proc.poll()})")
            buf += chunk
    finally:
        sel.close()
    record = json.loads(buf.split(b"\n", 1)[0])
    if not isinstance(record, dict):
        raise RuntimeError(f"first line is not a JSON object: {buf[:200]!r}")
    return record


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e["PYTHONUNBUFFERED"] = "1"
    return e


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
    """Stop the process and its group (each helper runs in a session of its own), close its pipes."""
    stop_group(proc, sig, timeout)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return proc.returncode


class Echo:
    def __init__(self, port: int = 0) -> None:
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "components.echo_server", "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=self._err,
            env=env(),
            cwd=REPO,
            start_new_session=True,
        )
        try:
            ready = read_json_line(self.proc, 10)
        except BaseException:
            self.stop(signal.SIGKILL)  # never leave a half-started process behind
            raise
        assert ready["event"] == "ready"
        self.port: int = ready["port"]
        self.target = f"127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM) -> int:
        rc = stop(self.proc, sig)
        if not self._err.closed:
            self._err.seek(0)
            self.stderr = self._err.read().decode(errors="replace")
            self._err.close()
        return rc


class Manager:
    def __init__(
        self,
        sock_path: Path,
        target: str,
        size: int = 4,
        *extra: str,
        wait_ready: bool = True,
        ready_timeout: float = 15.0,
        **kw: Any,
    ) -> None:
        self.sock_path = str(sock_path)
        self.log_path = Path(sock_path).with_suffix(".log")
        self.args = [
            sys.executable,
            "-m",
            "components.pool_manager",
            "--target",
            target,
            "--size",
            str(size),
            "--socket",
            self.sock_path,
            *extra,
        ]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process lifetime
        kw.setdefault("start_new_session", True)
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self._log, env=env(), cwd=REPO, **kw)
        self.ready: dict[str, Any] | None = None
        if wait_ready:
            try:
                self.ready = read_json_line(self.proc, ready_timeout)
            except BaseException:
                self.stop(signal.SIGKILL)  # never leave a half-started process behind
                raise
            assert self.ready["event"] == "ready", self.ready

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_socket(self, timeout: float = 10.0) -> None:
        """Until the manager listens on its socket: the file appears at bind(), a moment before
        listen(), and a caller connecting in between is refused. Read from /proc/net/unix, so the
        wait itself opens no connection the manager would see."""
        deadline = time.monotonic() + timeout
        while not unix_listening(self.sock_path):
            assert self.proc.poll() is None, f"manager exited: {self.logs()[-2000:]}"
            assert time.monotonic() < deadline, "manager socket never appeared or never listened"
            time.sleep(0.02)

    def stats(self) -> dict[str, Any]:
        from components.protocol import request

        return request(self.sock_path, "stats")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS line in /proc status")

    def logs(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.logs().splitlines() if line.startswith("{")]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        rc = stop(self.proc, sig)
        self._log.close()
        return rc


@contextlib.contextmanager
def short_tmpdir() -> Iterator[Path]:
    """Unix socket paths must stay under 108 bytes; pytest's tmp_path can be longer."""
    d = str(run_temp_dir("cpm-"))
    try:
        yield Path(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


SO_ACCEPTCON = 0x10000  # the Flags bit /proc/net/unix shows for a listening socket


def unix_listening(path: str) -> bool:
    """Whether a Unix stream socket bound to `path` is listening (in this network namespace)."""
    if not os.path.exists(path):
        return False
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return True  # no /proc: the file's existence is all we can tell
    for line in lines:
        fields = line.split()
        if len(fields) >= 8 and fields[7] == path and int(fields[3], 16) & SO_ACCEPTCON:
            return True
    return False
