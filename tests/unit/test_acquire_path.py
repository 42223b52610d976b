"""The injected-connect path: protocol.acquire's steps and errors, the dropped-fd report, and the
function's fallback and timing around them. A scripted manager over a real Unix socket, no Docker."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from components import protocol

sys.path.insert(0, str(Path(__file__).parent))

from test_pool_manager_support import REPO, Manager, env, short_tmpdir, wait_for

OK_REPLY = b'{"ok":true,"pool":"echo","peer":"127.0.0.1:1","id":41,"meta":{}}\n'
REPORT_OK = b'{"ok":true,"op":"report"}\n'
REPORT_UNKNOWN = b'{"ok":false,"error":"bad_request","detail":"unknown report event \'fd_dropped\'"}\n'


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class ScriptedManager:
    """Answers each connection by op: ``acquire`` with ``acquire_reply`` (plus the fds made by
    ``make_fds``), ``report`` with ``report_reply`` after ``report_delay`` s. Records every request
    with its arrival time (time.time_ns, the clock the function's t_end_ns uses)."""

    def __init__(self, path: str, acquire_reply: bytes = OK_REPLY, report_reply: bytes = REPORT_OK) -> None:
        self.path = path
        self.acquire_reply = acquire_reply
        self.report_reply = report_reply
        self.report_delay = 0.0
        self.make_fds: Callable[[], list[socket.socket]] = list
        self.split_reply = False
        self.requests: list[tuple[int, dict[str, Any]]] = []
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(16)
        self.srv.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    line, _fd = protocol.recv_line_with_fd(conn, 4096)
                except (OSError, ValueError):
                    continue
                req = json.loads(line)
                self.requests.append((time.time_ns(), req))
                if req.get("op") == "report":
                    time.sleep(self.report_delay)
                    with contextlib.suppress(OSError):  # the caller may have given up waiting
                        conn.sendall(self.report_reply)
                    continue
                fds = self.make_fds()
                try:
                    if fds:
                        anc = [
                            (
                                socket.SOL_SOCKET,
                                socket.SCM_RIGHTS,
                                b"".join(f.fileno().to_bytes(4, sys.byteorder, signed=True) for f in fds),
                            )
                        ]
                        conn.sendmsg([self.acquire_reply[:1]], anc)
                        rest = self.acquire_reply[1:]
                    else:
                        rest = self.acquire_reply
                    if self.split_reply:
                        conn.sendall(rest[:5])
                        time.sleep(0.05)
                        rest = rest[5:]
                    conn.sendall(rest)
                except OSError:
                    pass
                finally:
                    for f in fds:
                        f.close()

    def ops(self) -> list[dict[str, Any]]:
        return [req for _t, req in self.requests]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.srv.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with short_tmpdir() as d:
        yield d


@pytest.fixture
def scripted(sock_dir: Path) -> Iterator[Callable[..., ScriptedManager]]:
    made: list[ScriptedManager] = []

    def make(**kw: Any) -> ScriptedManager:
        m = ScriptedManager(str(sock_dir / f"s{len(made)}.sock"), **kw)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


class RecordingEcho:
    """A TCP echo server that remembers, per connection, the client's address and what it echoed."""

    def __init__(self) -> None:
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.srv.settimeout(0.1)
        self.port = self.srv.getsockname()[1]
        self.echoed: dict[str, bytes] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, addr = self.srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn, f"{addr[0]}:{addr[1]}"), daemon=True).start()

    def _echo(self, conn: socket.socket, client: str) -> None:
        conn.settimeout(10)
        got = b""
        with conn:
            try:
                while data := conn.recv(65536):
                    got += data
                    conn.sendall(data)
            except OSError:
                pass
        self.echoed[client] = got

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.srv.close()


@pytest.fixture
def recording_echo() -> Iterator[RecordingEcho]:
    e = RecordingEcho()
    yield e
    e.close()


def run_function(*args: str) -> tuple[int, dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "components.function", *args],
        capture_output=True, env=env(), cwd=REPO, timeout=30, check=False,
    )  # fmt: skip
    lines = out.stdout.decode().splitlines()
    assert len(lines) == 1, (out.stdout, out.stderr)
    return out.returncode, json.loads(lines[0])


# --- protocol.acquire ---------------------------------------------------------------------------


def test_acquire_returns_a_blocking_cloexec_socket_and_times_every_phase(
    scripted: Callable[..., ScriptedManager],
) -> None:
    m = scripted()
    m.make_fds = lambda: [socket.socket()]
    phases: dict[str, float] = {}
    t0 = time.perf_counter_ns()
    sock, reply = protocol.acquire(m.path, phases=phases)
    total_us = (time.perf_counter_ns() - t0) / 1000
    with sock:
        assert reply["id"] == 41 and sock.type == socket.SOCK_STREAM
        assert sock.getblocking() and not os.get_inheritable(sock.fileno())
    assert tuple(phases) == protocol.ACQUIRE_PHASES
    assert all(v >= 0 for v in phases.values())
    assert sum(phases.values()) <= total_us
    assert m.ops() == [{"v": 1, "op": "acquire", "pool": "echo"}]


def test_reply_split_across_segments_is_reassembled(scripted: Callable[..., ScriptedManager]) -> None:
    m = scripted()
    m.make_fds = lambda: [socket.socket()]
    m.split_reply = True
    phases: dict[str, float] = {}
    sock, reply = protocol.acquire(m.path, phases=phases)
    sock.close()
    assert reply["id"] == 41
    assert phases["reply_recv_us"] >= 50_000 * 0.9  # waited for the second segment (50 ms apart)


def test_surplus_fds_on_a_reply_are_closed(scripted: Callable[..., ScriptedManager]) -> None:
    m = scripted()
    m.make_fds = lambda: [socket.socket(), socket.socket(), socket.socket()]
    before = open_fds()
    sock, _reply = protocol.acquire(m.path)
    wait_for(lambda: open_fds() == before + 1)  # only the one we keep (the server closes its copies)
    sock.close()


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (b'{"ok":false,"error":"pool_exhausted","detail":"empty"}\n', "pool_exhausted"),
        (b"not json\n", "internal"),
        (b"[1,2]\n", "internal"),
        (b"", protocol.MANAGER_UNAVAILABLE),  # closed without a reply
        (b'{"ok":true', protocol.MANAGER_UNAVAILABLE),  # closed mid-line
    ],
)
def test_acquire_errors_leak_nothing(scripted: Callable[..., ScriptedManager], reply: bytes, code: str) -> None:
    m = scripted(acquire_reply=reply)
    m.make_fds = (lambda: [socket.socket()]) if reply else list
    before = open_fds()
    with pytest.raises(protocol.PoolError) as exc:
        protocol.acquire(m.path, timeout=2.0)
    assert exc.value.code == code
    wait_for(lambda: len(m.requests) == 1)
    wait_for(lambda: open_fds() == before)  # the server's copies close just after it replies


def test_silent_manager_times_out_after_the_timeout(sock_dir: Path) -> None:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = str(sock_dir / "silent.sock")
    srv.bind(path)
    srv.listen(1)
    try:
        t0 = time.monotonic()
        with pytest.raises(protocol.PoolError) as exc:
            protocol.acquire(path, timeout=0.2)
        assert exc.value.code == "timeout"
        assert time.monotonic() - t0 >= 0.2
    finally:
        srv.close()


def test_full_backlog_is_manager_unavailable(sock_dir: Path) -> None:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = str(sock_dir / "full.sock")
    srv.bind(path)
    srv.listen(0)
    fillers: list[socket.socket] = []
    try:
        for _ in range(64):  # fill the backlog: a non-blocking connect then fails with EAGAIN
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            fillers.append(s)
            try:
                s.connect(path)
            except BlockingIOError:
                break
        else:
            pytest.fail("backlog never filled")
        with pytest.raises(protocol.PoolError) as exc:
            protocol.acquire(path, timeout=0.2)
        assert exc.value.code == protocol.MANAGER_UNAVAILABLE and "backlog" in exc.value.detail
    finally:
        for s in fillers:
            s.close()
        srv.close()


def test_missing_socket_is_manager_unavailable(sock_dir: Path) -> None:
    with pytest.raises(protocol.PoolError) as exc:
        protocol.acquire(str(sock_dir / "none.sock"))
    assert exc.value.code == protocol.MANAGER_UNAVAILABLE


# --- dropped fds --------------------------------------------------------------------------------


def test_ok_reply_without_fd_raises_and_reports_by_default(scripted: Callable[..., ScriptedManager]) -> None:
    m = scripted()
    with pytest.raises(protocol.FdDroppedError) as exc:
        protocol.acquire(m.path, pool="echo")
    assert exc.value.code == protocol.FD_DROPPED and exc.value.reply["id"] == 41
    assert m.ops() == [
        {"v": 1, "op": "acquire", "pool": "echo"},
        {"v": 1, "op": "report", "pool": "echo", "event": "fd_dropped", "id": 41},
    ]


def test_dropped_fd_report_can_be_left_to_the_caller(scripted: Callable[..., ScriptedManager]) -> None:
    m = scripted()
    with pytest.raises(protocol.FdDroppedError) as exc:
        protocol.acquire(m.path, report_dropped=False)
    assert [r["op"] for r in m.ops()] == ["acquire"]
    assert protocol.report_fd_dropped(m.path, "echo", exc.value.reply) is True
    assert m.ops()[-1]["event"] == "fd_dropped"


def test_report_to_a_manager_without_the_event_is_false_not_an_error(
    scripted: Callable[..., ScriptedManager],
) -> None:
    m = scripted(report_reply=REPORT_UNKNOWN)
    with pytest.raises(protocol.FdDroppedError):
        protocol.acquire(m.path)  # the refused report does not replace the error
    assert protocol.report_fd_dropped(m.path, "echo", {"id": 1}) is False


def test_report_to_a_gone_or_silent_manager_is_false_within_its_timeout(
    scripted: Callable[..., ScriptedManager], sock_dir: Path
) -> None:
    assert protocol.report_fd_dropped(str(sock_dir / "gone.sock"), "echo", {}) is False
    m = scripted()
    m.report_delay = 1.0
    t0 = time.monotonic()
    assert protocol.report_fd_dropped(m.path, "echo", {"id": "not-an-int"}, timeout=0.1) is False
    assert time.monotonic() - t0 < m.report_delay
    wait_for(lambda: m.requests)
    assert "id" not in m.ops()[0]  # only an integer grant id is echoed back


# --- the function -------------------------------------------------------------------------------


def test_function_falls_back_on_a_dropped_fd_and_reports_it_after_the_clock(
    scripted: Callable[..., ScriptedManager], recording_echo: RecordingEcho
) -> None:
    m = scripted()
    m.report_delay = 0.15  # a slow report (within the function's 0.2 s) must not show in any timing
    rc, rec = run_function("--mode", "socket", "--socket", m.path, "--target", recording_echo.target)
    assert rc == 0 and rec["ok"] is True, rec
    assert rec["path"] == "fallback" and rec["fallback_reason"] == "fd_dropped"
    assert rec["fd_drop_reported"] is True
    assert rec["connect_us"] == pytest.approx(
        rec["socket_attempt_us"] + rec["resolve_us"] + rec["handshake_us"] + rec["verify_us"], rel=1e-6
    )
    assert rec["socket_attempt_us"] < m.report_delay * 1e6
    for name in protocol.ACQUIRE_PHASES[:-1]:  # everything up to the reply happened
        assert rec[name] >= 0
    reports = [(t, r) for t, r in m.requests if r["op"] == "report"]
    assert [r["event"] for _t, r in reports] == ["fd_dropped", "fallback"]
    assert reports[0][1]["id"] == 41
    assert all(t >= rec["t_end_ns"] for t, _r in reports)  # sent after the measured work
    assert rec["fd_check"]["peer"] == recording_echo.target


def test_function_falls_back_on_a_dropped_fd_with_a_manager_that_refuses_the_event(
    scripted: Callable[..., ScriptedManager], recording_echo: RecordingEcho
) -> None:
    m = scripted(report_reply=REPORT_UNKNOWN)
    rc, rec = run_function("--mode", "socket", "--socket", m.path, "--target", recording_echo.target)
    assert rc == 0 and rec["path"] == "fallback" and rec["fallback_reason"] == "fd_dropped"
    assert rec["fd_drop_reported"] is False
    assert [r.get("event") for r in m.ops()] == [None, "fd_dropped", "fallback"]


def test_function_without_fallback_fails_on_a_dropped_fd_and_still_reports(
    scripted: Callable[..., ScriptedManager],
) -> None:
    m = scripted()
    rc, rec = run_function("--mode", "socket", "--socket", m.path, "--no-fallback")
    assert rc == 1 and rec["ok"] is False and "fd_dropped" in rec["error"]
    assert rec["fd_drop_reported"] is True
    assert [r.get("event") for r in m.ops()] == [None, "fd_dropped"]


@pytest.mark.parametrize("mode", ["socket", "direct"])
def test_checked_socket_is_the_connection_that_echoed(mode: str, recording_echo: RecordingEcho) -> None:
    """The validity check runs after the clock; this proves it checked the connection that was then
    used: the checked socket's local address is the client address of the connection the echo
    server saw carrying the function's request."""
    with short_tmpdir() as d:
        mgr = Manager(d / "m.sock", recording_echo.target, 3)
        try:
            rc, rec = run_function("--mode", mode, "--socket", mgr.sock_path, "--target", recording_echo.target)
        finally:
            mgr.stop()
    assert rc == 0 and rec["path"] == mode, rec
    check = rec["fd_check"]
    assert check["ok"] and check["peer"] == recording_echo.target
    wait_for(lambda: check["local"] in recording_echo.echoed)
    echoed = recording_echo.echoed[check["local"]]
    assert echoed.startswith(b"REQ ") and len(echoed) == 64
    others = [data for client, data in recording_echo.echoed.items() if client != check["local"]]
    assert not any(data.startswith(b"REQ ") for data in others)  # no other connection carried it


def test_socket_record_carries_the_breakdown(recording_echo: RecordingEcho) -> None:
    with short_tmpdir() as d:
        mgr = Manager(d / "m.sock", recording_echo.target, 2)
        try:
            rc, rec = run_function("--mode", "socket", "--socket", mgr.sock_path)
        finally:
            mgr.stop()
    assert rc == 0 and rec["path"] == "socket", rec
    phases = [rec[name] for name in protocol.ACQUIRE_PHASES]
    assert all(p >= 0 for p in phases) and sum(phases) <= rec["acquire_us"]
    assert rec["fd_check_us"] == rec["verify_us"] > 0 and rec["protocol_import_us"] > 0
    assert rec["connect_us"] == pytest.approx(rec["acquire_us"] + rec["verify_us"], rel=1e-6)
    assert rec["prefetch_us"] > 0 and rec["prefetch_bytes"] > 0


def test_no_prefetch_leaves_the_fields_empty(recording_echo: RecordingEcho) -> None:
    rc, rec = run_function("--mode", "direct", "--target", recording_echo.target, "--no-prefetch")
    assert rc == 0 and rec["prefetch_us"] is None and rec["prefetch_bytes"] is None
