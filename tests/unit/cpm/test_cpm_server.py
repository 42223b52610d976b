"""Pool manager, event loop and client protocol room: start-up, requests, bad input, callers, shutdown.

Against a real echo server, over real sockets, in real processes."""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))

from test_pool_manager_support import (
    Echo,
    Manager,
    echo_roundtrip,
    error_of,
    raw_exchange,
    wait_for,
)

from components import protocol


def test_ready_line_and_socket_permissions(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 3)
    assert m.ready == {"event": "ready", "socket": m.sock_path, "pools": {"echo": 3}}
    assert stat.S_ISSOCK(os.stat(m.sock_path).st_mode)
    assert stat.S_IMODE(os.stat(m.sock_path).st_mode) == 0o660
    events = m.log_events()
    assert any(e["event"] == "listening" and e["socket_mode"] == "0o660" for e in events)
    assert all({"ts", "level", "event"} <= set(e) for e in events)


def test_named_pools_from_config_file(echo: Echo, sockdir: Path) -> None:
    other = Echo()
    cfg = sockdir / "cpm.json"
    cfg.write_text(
        json.dumps(
            {
                "pools": {
                    "a": {"target": echo.target, "size": 2},
                    "b": {"target": other.target, "size": 3, "exhaustion": "refuse"},
                }
            }
        )
    )
    m = Manager(sockdir / "m.sock", echo.target, 2, "--config", str(cfg), "--pool", "a")
    try:
        assert m.ready is not None and m.ready["pools"] == {"a": 2, "b": 3}
        sa, ra = protocol.acquire(m.sock_path, "a")
        sb, rb = protocol.acquire(m.sock_path, "b")
        assert ra["peer"] == echo.target and rb["peer"] == other.target
        assert protocol.format_peer(sb.getpeername()) == other.target
        sa.close()
        sb.close()
        with pytest.raises(protocol.PoolError) as exc:
            protocol.acquire(m.sock_path, "nope")
        assert exc.value.code == "unknown_pool"
    finally:
        m.stop()
        other.stop()


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"x" * 5000, "bad_request"),  # oversized, no newline
        (b'{"v":1,"op":"ping","pad":"' + b"y" * 4200 + b'"}\n', "bad_request"),  # oversized line
        (b"not json\n", "bad_request"),
        (b"\xff\xfe\n", "bad_request"),
        (b"[1,2,3]\n", "bad_request"),
        (b'{"v":1,"op":"launch"}\n', "bad_request"),
        (b'{"v":2,"op":"acquire","pool":"echo"}\n', "bad_request"),
        (b'{"v":1,"op":7}\n', "bad_request"),
        (b'{"v":1,"op":"acquire","pool":"nope"}\n', "unknown_pool"),
        (b'{"v":1,"op":"release","pool":"echo"}\n', "bad_request"),  # release without an fd
    ],
)
def test_bad_requests_get_error_lines(
    echo: Echo, start_manager: Callable[..., Manager], payload: bytes, code: str
) -> None:
    m = start_manager(echo.target, 2)
    fds_before = m.open_fds()
    assert error_of(raw_exchange(m.sock_path, payload)) == code
    # Still serving, nothing leaked.
    sock, _ = protocol.acquire(m.sock_path)
    sock.close()
    wait_for(lambda: m.open_fds() == fds_before, timeout=3)


def test_silent_client_times_out_without_stalling_others(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 4, "--request-timeout", "0.5")
    silent = []
    for _ in range(20):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(m.sock_path)
        silent.append(s)
    partial = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    partial.connect(m.sock_path)
    partial.sendall(b'{"v":1,"op":"acq')  # slow client: half a request, then nothing
    t0 = time.monotonic()
    sock, _ = protocol.acquire(m.sock_path, timeout=1.0)
    assert time.monotonic() - t0 < 0.4  # others are served while the silent ones wait
    sock.close()
    for s in [*silent, partial]:
        s.settimeout(3)
        line = s.recv(4096)
        assert error_of(line) == "timeout"
        s.close()
    assert m.stats()["clients"] == 1  # only the stats caller itself


def test_clients_vanishing_mid_reply_leak_nothing(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 8)
    fds_before = m.open_fds()
    for _ in range(300):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(m.sock_path)
        s.sendall(protocol.encode_request("acquire", pool="echo"))
        s.close()  # gone before (or while) the reply with its fd is sent
    sock, _ = protocol.acquire(m.sock_path)
    assert echo_roundtrip(sock)
    sock.close()
    wait_for(lambda: m.stats()["pools"]["echo"]["idle"] == 8, timeout=5)
    # Connections whose receiver vanished were closed with it (in flight) or kept (never sent).
    wait_for(lambda: abs(m.open_fds() - fds_before) <= 1, timeout=5)
    assert m.proc.poll() is None


def test_unexpected_fds_attached_to_requests_are_closed(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 2)
    fds_before = m.open_fds()
    for _ in range(50):
        r, w = os.pipe()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(m.sock_path)
        s.sendmsg(
            [b'{"v":1,"op":"ping"}\n'],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r, w, r]).tobytes())],
        )
        s.settimeout(3)
        assert json.loads(s.recv(4096))["ok"] is True
        s.close()
        os.close(r)
        os.close(w)
    wait_for(lambda: m.open_fds() == fds_before, timeout=3)


def test_sigterm_removes_socket_and_sigkill_leaves_stale_one(echo: Echo, sockdir: Path) -> None:
    m = Manager(sockdir / "m.sock", echo.target, 2)
    assert m.stop(signal.SIGTERM) == 0
    assert not os.path.exists(m.sock_path)
    assert any(e["event"] == "stopped" for e in m.log_events())

    m = Manager(sockdir / "m.sock", echo.target, 2)
    m.stop(signal.SIGKILL)
    assert os.path.exists(m.sock_path)  # crashed run leaves its socket file
    m = Manager(sockdir / "m.sock", echo.target, 2)  # restart on the stale path
    try:
        assert any(e["event"] == "stale_socket_removed" for e in m.log_events())
        sock, _ = protocol.acquire(m.sock_path)
        sock.close()
        # A second manager must not steal a live socket.
        other = Manager(sockdir / "m.sock", echo.target, 2, wait_ready=False)
        assert other.proc.wait(10) == 2
        assert "another manager is listening" in other.logs()
        other.stop()
        sock, _ = protocol.acquire(m.sock_path)
        sock.close()
    finally:
        m.stop()


def test_refuses_pool_size_that_cannot_fit_fd_limit(sockdir: Path) -> None:
    m = Manager(sockdir / "m.sock", "127.0.0.1:9", 10_000_000, wait_ready=False)
    assert m.proc.wait(10) == 2
    text = m.logs()
    assert "RLIMIT_NOFILE" in text and "file descriptors" in text
    assert not os.path.exists(m.sock_path)
    m.stop()


def test_refuses_to_replace_non_socket_file(sockdir: Path) -> None:
    path = sockdir / "m.sock"
    path.write_text("precious")
    m = Manager(path, "127.0.0.1:9", 1, wait_ready=False)
    assert m.proc.wait(10) == 2
    assert path.read_text() == "precious"
    m.stop()


def test_allow_list_excluding_root_gives_forbidden(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 2, "--allow-uid", "12345")
    wait_for(lambda: m.open_fds() == m.open_fds(), timeout=1)
    before = m.open_fds()
    for op in ("acquire", "stats", "ping"):
        reply = raw_exchange(m.sock_path, protocol.encode_request(op, pool="echo"))
        assert error_of(reply) == "forbidden"
    wait_for(lambda: m.open_fds() == before, timeout=3)  # no fd parked or leaked for denied callers
    wait_for(lambda: len([e for e in m.log_events() if e["event"] == "denied"]) == 3, timeout=3)
    events = [e for e in m.log_events() if e["event"] == "denied"]
    assert events[0]["uid"] == os.getuid() and events[0]["pid"] == os.getpid()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a client as another uid")
def test_other_uid_is_forbidden_by_default(echo: Echo, start_manager: Callable[..., Manager], sockdir: Path) -> None:
    sockdir.chmod(0o755)  # opened by the operator: the manager never chmods a directory it did not create
    m = start_manager(echo.target, 2, "--socket-mode", "0666")
    assert stat.S_IMODE(os.stat(os.path.dirname(m.sock_path)).st_mode) == 0o755
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: become nobody, then ask for a connection
        code = 3
        try:
            os.close(r)
            os.setgid(65534)
            os.setuid(65534)
            try:
                s, _ = protocol.acquire(m.sock_path)
                s.close()
                result = "granted"
            except protocol.PoolError as exc:
                result = exc.code
            os.write(w, result.encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    got = os.read(r, 100).decode()
    os.close(r)
    assert os.waitstatus_to_exitcode(status) == 0
    assert got == "forbidden"
    assert m.stats()["denied"] == 1
    # Root (allowed by default) still gets connections.
    sock, _ = protocol.acquire(m.sock_path)
    sock.close()
    grants = wait_for(lambda: [e for e in m.log_events() if e["event"] == "grant"], timeout=3)
    assert grants[-1]["uid"] == 0


def test_python_loadgen_cli(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    import subprocess

    from test_pool_manager_support import REPO, env

    m = start_manager(echo.target, 8)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "components.loadgen",
            "--socket",
            m.sock_path,
            "--clients",
            "2",
            "--duration",
            "0.5",
            "--echo",
        ],
        capture_output=True,
        env=env(),
        cwd=REPO,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["count"] > 0 and res["failures"] == 0 and res["latency_us"]["p50"] > 0
