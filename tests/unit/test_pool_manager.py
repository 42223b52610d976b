"""Pool manager against a real echo server, over real sockets, in real processes."""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_pool_manager_support import (
    Echo,
    Manager,
    dead_port,
    echo_roundtrip,
    raw_exchange,
    short_tmpdir,
    wait_for,
)

from components import protocol


@pytest.fixture
def sockdir() -> Iterator[Path]:
    with short_tmpdir() as d:
        yield d


@pytest.fixture
def start_manager(sockdir: Path) -> Iterator[Callable[..., Manager]]:
    started: list[Manager] = []

    def start(target: str, size: int = 4, *extra: str, wait_ready: bool = True, name: str = "m.sock") -> Manager:
        m = Manager(sockdir / name, target, size, *extra, wait_ready=wait_ready)
        started.append(m)
        return m

    yield start
    for m in started:
        m.stop(signal.SIGKILL if m.proc.poll() is None else signal.SIGTERM)


def error_of(reply: bytes) -> str:
    obj = json.loads(reply.split(b"\n", 1)[0])
    assert obj["ok"] is False, obj
    assert set(obj) == {"ok", "error", "detail"}
    return str(obj["error"])


# ---------------------------------------------------------------- basics


def test_ready_line_and_socket_permissions(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 3)
    assert m.ready == {"event": "ready", "socket": m.sock_path, "pools": {"echo": 3}}
    assert stat.S_ISSOCK(os.stat(m.sock_path).st_mode)
    assert stat.S_IMODE(os.stat(m.sock_path).st_mode) == 0o660
    events = m.log_events()
    assert any(e["event"] == "listening" and e["socket_mode"] == "0o660" for e in events)
    assert all({"ts", "level", "event"} <= set(e) for e in events)


def test_acquire_hands_out_connected_blocking_sockets(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 4)
    ids = set()
    for _ in range(12):  # more than the pool holds: refill must keep up
        sock, reply = protocol.acquire(m.sock_path)
        try:
            assert reply["ok"] is True and reply["pool"] == "echo" and reply["meta"] == {}
            assert reply["peer"] == echo.target
            assert protocol.format_peer(sock.getpeername()) == echo.target
            assert sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
            assert sock.getblocking()
            assert os.get_inheritable(sock.fileno()) is False  # arrived with MSG_CMSG_CLOEXEC
            assert echo_roundtrip(sock, f"hello {reply['id']}\n".encode())
            ids.add(reply["id"])
        finally:
            sock.close()
    assert len(ids) == 12
    st = m.stats()
    assert st["pools"]["echo"]["handed_out"] == 12


def test_ping_and_stats_fields(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 2)
    assert protocol.request(m.sock_path, "ping")["ok"] is True
    sock, _ = protocol.acquire(m.sock_path)
    sock.close()
    st = m.stats()
    pool = st["pools"]["echo"]
    for key in (
        "idle",
        "size",
        "min_idle",
        "connecting",
        "handed_out",
        "refills",
        "discards",
        "discard_health",
        "fallbacks_seen",
        "borrow_waits",
        "backend_up",
    ):
        assert key in pool, key
    assert st["open_fds"] > 0
    hist = st["acquire_latency_us"]
    assert hist["count"] == 1 == sum(hist["counts"])
    assert len(hist["counts"]) == len(hist["bounds"]) + 1


def test_refill_after_handouts(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 6)
    held = [protocol.acquire(m.sock_path)[0] for _ in range(6)]
    try:
        wait_for(lambda: m.stats()["pools"]["echo"]["idle"] == 6, timeout=5)
        st = m.stats()["pools"]["echo"]
        assert st["refills"] >= 12
        assert st["handed_out"] == 6
    finally:
        for s in held:
            s.close()


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


# ---------------------------------------------------------------- bad input


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


# ---------------------------------------------------------------- health, backend failures


def test_backend_restart_never_hands_out_dead_connections(sockdir: Path) -> None:
    echo = Echo()
    port = echo.port
    m = Manager(sockdir / "m.sock", echo.target, 5, "--exhaustion", "connect", "--borrow-timeout", "0.5")
    try:
        echo.stop(signal.SIGKILL)  # backend dies: every pooled connection is now closed by the peer
        time.sleep(0.2)
        # Nothing dead is handed out: either refused with backend_unavailable or not at all.
        for _ in range(5):
            with pytest.raises(protocol.PoolError) as exc:
                sock, _ = protocol.acquire(m.sock_path)
                sock.close()
            assert exc.value.code in ("backend_unavailable", "pool_exhausted")
        st = m.stats()["pools"]["echo"]
        assert st["discard_health"] >= 5
        assert st["backend_up"] is False
        echo = Echo(port)  # same address comes back
        wait_for(lambda: m.stats()["pools"]["echo"]["idle"] == 5, timeout=8)
        for _ in range(10):
            sock, _ = protocol.acquire(m.sock_path)
            assert echo_roundtrip(sock)
            sock.close()
        assert m.stats()["pools"]["echo"]["backend_up"] is True
    finally:
        m.stop()
        echo.stop()


def test_backend_down_no_busy_loop_and_backend_unavailable(start_manager: Callable[..., Manager]) -> None:
    m = start_manager(f"127.0.0.1:{dead_port()}", 4, wait_ready=False)
    m.wait_socket()
    time.sleep(0.3)
    cpu0 = m.cpu_seconds()
    time.sleep(1.0)
    used = m.cpu_seconds() - cpu0
    assert used < 0.15, f"manager burned {used:.2f}s CPU in 1s with the backend down"
    with pytest.raises(protocol.PoolError) as exc:
        protocol.acquire(m.sock_path)
    assert exc.value.code == "backend_unavailable"
    st = m.stats()["pools"]["echo"]
    assert st["backend_up"] is False and st["connect_failures"] >= 1
    # Backoff: a handful of attempts per second, not thousands.
    assert st["connect_failures"] < 60
    assert any(e["event"] == "connect_failed" for e in m.log_events())


def test_health_sweep_replaces_connections_closed_by_backend(start_manager: Callable[..., Manager]) -> None:
    # A backend that accepts and immediately closes every connection.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(128)
    target = f"127.0.0.1:{srv.getsockname()[1]}"
    m = start_manager(target, 3, "--health-interval", "0.2")
    srv.settimeout(3)
    for _ in range(3):
        c, _ = srv.accept()
        c.close()
    srv.close()
    time.sleep(0.3)
    with pytest.raises(protocol.PoolError):
        protocol.acquire(m.sock_path)
    assert m.stats()["pools"]["echo"]["discard_health"] >= 3


def test_exhaustion_policies(start_manager: Callable[..., Manager]) -> None:
    # A listener that never accepts: its backlog fills, then connects hang (SYNs dropped).
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    target = f"127.0.0.1:{srv.getsockname()[1]}"
    try:
        refuse = start_manager(target, 1, "--exhaustion", "refuse", name="r.sock")
        held, _ = protocol.acquire(refuse.sock_path)
        t0 = time.monotonic()
        with pytest.raises(protocol.PoolError) as exc:
            protocol.acquire(refuse.sock_path)
        assert exc.value.code == "pool_exhausted"
        assert time.monotonic() - t0 < 0.3
        held.close()
        refuse.stop()

        wait = start_manager(
            target, 1, "--exhaustion", "wait", "--borrow-timeout", "0.4", wait_ready=False, name="w.sock"
        )
        wait.wait_socket()
        time.sleep(0.3)
        t0 = time.monotonic()
        with pytest.raises(protocol.PoolError) as exc:
            for _ in range(3):
                s, _ = protocol.acquire(wait.sock_path)
                s.close()
        waited = time.monotonic() - t0
        assert exc.value.code in ("pool_exhausted", "backend_unavailable")
        assert 0.3 < waited < 2.0
        assert wait.stats()["pools"]["echo"]["borrow_timeouts"] >= 1
    finally:
        srv.close()


# ---------------------------------------------------------------- lifecycle


def test_ttl_and_max_idle(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 4, "--ttl", "0.4", "--health-interval", "0.1")
    wait_for(lambda: m.stats()["pools"]["echo"]["discard_ttl"] >= 4, timeout=3)
    wait_for(lambda: m.stats()["pools"]["echo"]["idle"] == 4, timeout=3)

    m2 = start_manager(
        echo.target, 6, "--max-idle", "0.3", "--min-idle", "2", "--health-interval", "0.1", name="m2.sock"
    )
    wait_for(lambda: m2.stats()["pools"]["echo"]["idle"] == 2, timeout=3)
    assert m2.stats()["pools"]["echo"]["discard_idle"] >= 4
    sock, _ = protocol.acquire(m2.sock_path)  # demand returns: refill back to size
    sock.close()
    wait_for(lambda: m2.stats()["pools"]["echo"]["idle"] == 6, timeout=3)


def test_keepalive_and_user_timeout_set_before_handout(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 1)
    sock, _ = protocol.acquire(m.sock_path)
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30000
    finally:
        sock.close()


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


# ---------------------------------------------------------------- access control


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
def test_other_uid_is_forbidden_by_default(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 2, "--socket-mode", "0666", "--socket-dir-mode", "0755")
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


# ---------------------------------------------------------------- release (issue 5)


def _release(m: Manager, sock: socket.socket) -> dict[str, Any]:
    return protocol.release(m.sock_path, sock)


def test_release_healthy_connection_is_reused(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 2)
    sock, _reply = protocol.acquire(m.sock_path)
    local = sock.getsockname()
    assert echo_roundtrip(sock)
    out = _release(m, sock)
    assert out["ok"] is True and out["reused"] is True
    assert sock.fileno() == -1  # our copy is closed
    st = m.stats()["pools"]["echo"]
    assert st["released_reused"] == 1
    # The returned connection is handed out again (it waits at the back of the queue).
    seen = []
    for _ in range(4):
        s, _ = protocol.acquire(m.sock_path)
        seen.append(s.getsockname())
        assert echo_roundtrip(s)
        s.close()
    assert local in seen


def test_release_with_unread_data_is_discarded(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 2)
    sock, _ = protocol.acquire(m.sock_path)
    sock.sendall(b"unanswered\n")  # the echo comes back and is never read
    time.sleep(0.2)
    out = _release(m, sock)
    assert out == {"ok": True, "op": "release", "pool": "echo", "reused": False, "reason": "unread_data"}
    assert m.stats()["pools"]["echo"]["discard_release"] == 1


def test_release_half_closed_is_discarded(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 2)
    sock, _ = protocol.acquire(m.sock_path)
    sock.shutdown(socket.SHUT_WR)
    time.sleep(0.1)
    out = _release(m, sock)
    # Depending on how far the close got: our FIN sent (half_closed), the peer's FIN seen (eof),
    # or both done and the socket in TIME_WAIT (not_connected). Never reused.
    assert out["reused"] is False and out["reason"] in ("half_closed", "eof", "not_connected")


def test_release_of_foreign_connection_is_refused(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 2)
    own = socket.create_connection(("127.0.0.1", echo.port))
    out = _release(m, own)
    assert out["reused"] is False and out["reason"] == "unknown_connection"
    r, w = os.pipe()
    os.close(w)
    pipe_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # A non-socket fd is refused too.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(m.sock_path)
    s.sendmsg(
        [protocol.encode_request("release", pool="echo")],
        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r]).tobytes())],
    )
    s.settimeout(3)
    assert error_of(s.recv(4096)) == "bad_request"
    s.close()
    os.close(r)
    pipe_sock.close()


def test_release_disabled(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 2, "--no-release")
    sock, _ = protocol.acquire(m.sock_path)
    out = _release(m, sock)
    assert out["reused"] is False and out["reason"] == "release_disabled"


# ---------------------------------------------------------------- fd stability, loadgen


def test_fd_count_stable_over_many_handouts(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    size = 16
    m = start_manager(echo.target, size)
    before = m.open_fds()
    from components.loadgen import run

    result = run(m.sock_path, clients=3, duration=2.0, pool="echo", echo=False, timeout=2.0)
    assert result["failures"] == 0, result
    assert result["count"] > 500
    wait_for(lambda: m.stats()["pools"]["echo"]["idle"] == size, timeout=5)
    after = m.open_fds()
    assert abs(after - before) <= size, (before, after)
    st = m.stats()
    assert st["pools"]["echo"]["handed_out"] == result["count"]
    assert st["acquire_latency_us"]["count"] == result["count"]


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
