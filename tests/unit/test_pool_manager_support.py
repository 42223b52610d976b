"""Helpers shared by the pool tests: real echo server and manager subprocesses on loopback.

(Named test_* only so it sits with the tests it serves; it defines no tests itself.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from coldstart_bench.procs import read_json_line

REPO = Path(__file__).resolve().parents[2]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e["PYTHONUNBUFFERED"] = "1"
    return e


@contextlib.contextmanager
def short_tmpdir() -> Iterator[Path]:
    """Unix socket paths must stay under 108 bytes; pytest's tmp_path can be longer."""
    d = tempfile.mkdtemp(prefix="cpm-", dir="/tmp")
    try:
        yield Path(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
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
        self, sock_path: Path, target: str, size: int = 4, *extra: str, wait_ready: bool = True, **kw: Any
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
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self._log, env=env(), cwd=REPO, **kw)
        self.ready: dict[str, Any] | None = None
        if wait_ready:
            try:
                self.ready = read_json_line(self.proc, 15)
            except BaseException:
                self.stop(signal.SIGKILL)  # never leave a half-started process behind
                raise
            assert self.ready["event"] == "ready", self.ready

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_socket(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.sock_path):
            assert self.proc.poll() is None, f"manager exited: {self.logs()[-2000:]}"
            assert time.monotonic() < deadline, "manager socket never appeared"
            time.sleep(0.02)

    def stats(self) -> dict[str, Any]:
        from components.protocol import request

        return request(self.sock_path, "stats")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

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


def wait_for(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Poll until predicate() is truthy; bounded in time."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(interval)


def raw_exchange(sock_path: str, payload: bytes, timeout: float = 3.0) -> bytes:
    """Send raw bytes to the manager and return everything it answers until it closes."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        if payload:
            s.sendall(payload)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
    finally:
        s.close()


def dead_port() -> int:
    """A loopback port with nothing listening (bound then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def echo_roundtrip(sock: socket.socket, data: bytes = b"roundtrip\n") -> bool:
    sock.settimeout(3)
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(len(data) - len(got))
        if not chunk:
            return False
        got += chunk
    return got == data
