"""The manager under abuse: one test per defect class, real sockets and processes.

After every abuse the manager must be alive, serve a normal acquire, and hold exactly as many
descriptors as before, apart from the pools' own (idle, settling and connecting connections,
which refills change): ``loose_fds`` counts the rest, from one ``stats`` reply.
"""

from __future__ import annotations

import array
import contextlib
import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))

from test_pool_manager_support import (
    REPO,
    Echo,
    Manager,
    assert_still_serving,
    echo_roundtrip,
    env,
    error_of,
    loose_fds,
    raw_exchange,
    wait_for,
)

from components import protocol


class BadBackend:
    """A TCP server on loopback that misbehaves on every connection it accepts."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.listener.settimeout(0.1)
        self.target = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.kept: list[socket.socket] = []
        self.accepted = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            if self.mode == "close":
                conn.close()  # accepts, then hangs up before anything is said
            else:
                conn.sendall(b"220 welcome\r\n")  # a banner nobody asked for
                self.kept.append(conn)

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(5)
        for s in self.kept:
            s.close()
        self.listener.close()


@pytest.fixture
def two_pools(echo: Echo, sockdir: Path) -> Iterator[Callable[[str], Manager]]:
    """A manager with a healthy pool "echo" and a pool "bad" in front of a misbehaving backend."""
    started: list[tuple[Manager, BadBackend]] = []

    def start(mode: str, *extra: str) -> Manager:
        bad = BadBackend(mode)
        # A settle period well above scheduling delays on a loaded machine (the default is 20 ms).
        bad_pool = {"target": bad.target, "size": 4, "settle_ms": 100}
        cfg = {"pools": {"echo": {"target": echo.target, "size": 2}, "bad": bad_pool}}
        (sockdir / "cfg.json").write_text(json.dumps(cfg))
        m = Manager(sockdir / "m.sock", echo.target, 2, "--config", str(sockdir / "cfg.json"), *extra, wait_ready=False)
        started.append((m, bad))
        m.wait_socket()
        return m

    yield start
    for m, bad in started:
        m.stop(signal.SIGKILL if m.proc.poll() is None else signal.SIGTERM)
        bad.stop()


# ---------------------------------------------------------------- 1: no request ends the manager


@pytest.mark.parametrize(
    "payload",
    [
        b'{"v":1,"op":"ping","x":' + b"[" * 990 + b"]" * 990 + b"}\n",
        b'{"v":1,"op":"ping","x":' + b'[{"":' * 550 + b"1" + b"}]" * 550 + b"}\n",
        b'{"v":1,"op":"acquire","pool":"echo","x":' + b"[" * 1500 + b"]" * 1500 + b"}\n",
    ],
    ids=["lists", "lists-and-objects", "acquire"],
)
def test_deeply_nested_request_gets_an_error_line(
    echo: Echo, start_manager: Callable[..., Manager], payload: bytes
) -> None:
    assert len(payload) < protocol.MAX_REQUEST_BYTES
    m = start_manager(echo.target, 2)
    before = loose_fds(m)
    for _ in range(3):
        assert error_of(raw_exchange(m.sock_path, payload)) == "bad_request"
    assert_still_serving(m, before)


@pytest.mark.parametrize("version", [b"true", b"1.0", b'"1"', b"null"])
def test_version_must_be_the_integer_one(echo: Echo, start_manager: Callable[..., Manager], version: bytes) -> None:
    m = start_manager(echo.target, 2)
    before = loose_fds(m)
    reply = raw_exchange(m.sock_path, b'{"v":' + version + b',"op":"ping"}\n')
    assert error_of(reply) == "bad_request"
    assert_still_serving(m, before)


# ---------------------------------------------------------------- 2: only healthy connections go out


@pytest.mark.parametrize("mode", ["close", "banner"])
def test_backend_that_ends_or_greets_new_connections_is_never_handed_out(
    two_pools: Callable[[str], Manager], mode: str
) -> None:
    m = two_pools(mode)
    wait_for(lambda: m.stats()["pools"]["echo"]["idle"] == 2, timeout=5)
    # A caller that comes before the first refill round has judged the backend waits for a
    # connection instead (and times out); on a loaded machine that round can take a while.
    wait_for(lambda: m.stats()["pools"]["bad"]["backend_up"] is False, timeout=10)
    before = loose_fds(m)
    codes = []
    for _ in range(40):
        try:
            sock, _ = protocol.acquire(m.sock_path, "bad")
        except protocol.PoolError as exc:
            codes.append(exc.code)
        else:  # handed out: it must at least be clean now
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1, socket.MSG_PEEK)
            sock.close()
            codes.append("granted")
    # The caller is told the backend is unusable and falls back.
    assert set(codes) == {"backend_unavailable"}, codes
    st = m.stats()["pools"]["bad"]
    assert st["backend_up"] is False
    assert st["discard_fresh"] >= 1
    assert st["handed_out"] == 0
    assert st["idle"] == 0
    # Backoff, not a connect storm: a few probes, not one refill round per acquire.
    assert st["refills"] <= 40, st
    # Logged in aggregate: not a line per discarded connection.
    lines = [e for e in m.log_events() if e["event"] in ("discard", "discards", "connect_failed")]
    assert len(lines) <= 30, len(lines)
    assert_still_serving(m, before)


# ---------------------------------------------------------------- 3: denied peers cannot starve allowed ones


def _hold_denied_connections(path: str, count: int, ready_w: int, stop_r: int) -> None:
    """Child process body: as uid 65534, keep ``count`` silent connections, reconnecting closed ones."""
    os.setgid(65534)
    os.setuid(65534)
    socks: list[socket.socket] = []

    def connect() -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        return s

    socks = [connect() for _ in range(count)]
    os.write(ready_w, b"r")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        readable, _, _ = select.select([stop_r, *socks], [], [], 0.05)
        if stop_r in readable:
            break
        for s in readable:
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                socks.remove(s)
                s.close()
                with contextlib.suppress(OSError):
                    socks.append(connect())


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run clients as another uid")
def test_denied_peers_cannot_starve_allowed_ones(
    echo: Echo, start_manager: Callable[..., Manager], sockdir: Path
) -> None:
    sockdir.chmod(0o755)  # the operator opens the directory; the manager never chmods one it did not create
    m = start_manager(echo.target, 4, "--socket-mode", "0666", "--max-clients", "20")
    before = loose_fds(m)
    ready_r, ready_w = os.pipe()
    stop_r, stop_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(ready_r)
            os.close(stop_w)
            _hold_denied_connections(m.sock_path, 40, ready_w, stop_r)
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(stop_r)
    try:
        assert select.select([ready_r], [], [], 10)[0], "the denied client never connected"
        time.sleep(0.2)
        for _ in range(4):
            sock, _ = protocol.acquire(m.sock_path, timeout=2)
            assert echo_roundtrip(sock)
            sock.close()
        st = m.stats()
        assert st["denied"] >= 1
        assert any(e["event"] == "denied" and e["uid"] == 65534 for e in m.log_events())
    finally:
        os.close(stop_w)
        _, status = os.waitpid(pid, 0)
        os.close(ready_r)
    assert os.waitstatus_to_exitcode(status) == 0
    wait_for(lambda: m.stats()["clients"] == 1, timeout=5)  # denied callers' slots are given back
    assert_still_serving(m, before)


# ---------------------------------------------------------------- 4: a busy manager keeps its socket


def test_busy_manager_socket_is_not_taken_over(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 2)
    before = loose_fds(m)
    backlog: list[socket.socket] = []
    os.kill(m.pid, signal.SIGSTOP)  # busy: accepts nothing while its backlog fills
    try:
        for _ in range(20_000):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            err = s.connect_ex(m.sock_path)
            if err:
                s.close()
                assert err == errno.EAGAIN, os.strerror(err)
                break
            backlog.append(s)
        else:
            pytest.fail("the accept backlog never filled")
        second = Manager(Path(m.sock_path), echo.target, 2, wait_ready=False)
        try:
            assert second.proc.wait(15) == 2
            events = second.log_events()
            assert not any(e["event"] == "stale_socket_removed" for e in events)
            assert any(e["event"] == "bind_failed" and "another manager" in e["error"] for e in events)
        finally:
            second.stop()
        assert os.path.exists(m.sock_path)
    finally:
        os.kill(m.pid, signal.SIGCONT)
        for s in backlog:
            s.close()
    wait_for(lambda: m.stats()["clients"] == 1, timeout=10)
    assert_still_serving(m, before)


# ---------------------------------------------------------------- 5, 6: release


def test_release_with_fd_on_first_byte_and_rest_of_line_later(
    echo: Echo, start_manager: Callable[..., Manager]
) -> None:
    m = start_manager(echo.target, 2)
    before = loose_fds(m)
    for _ in range(5):
        conn, _ = protocol.acquire(m.sock_path)
        assert echo_roundtrip(conn)
        line = protocol.encode_request("release", pool="echo")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(3)
        s.connect(m.sock_path)
        s.sendmsg([line[:1]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [conn.fileno()]).tobytes())])
        time.sleep(0.05)  # the rest arrives in a later read
        s.sendall(line[1:])
        reply = json.loads(s.recv(4096))
        s.close()
        conn.close()
        assert reply == {"ok": True, "op": "release", "pool": "echo", "reused": True}
    assert m.stats()["pools"]["echo"]["released_reused"] == 5
    assert_still_serving(m, before)


def test_partial_line_with_fds_then_hang_up_leaks_nothing(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 2)
    before = loose_fds(m)
    for _ in range(20):
        r, w = os.pipe()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(m.sock_path)
        s.sendmsg([b"{"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r, w]).tobytes())])
        s.close()
        os.close(r)
        os.close(w)
    assert_still_serving(m, before)


FORGE_RELEASE = """
import json, socket, subprocess, sys
from components import protocol
manager_socket, local_port, peer_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
server = socket.create_server(("127.0.0.1", peer_port))  # a different backend on the same address
forged = socket.socket()
forged.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
forged.bind(("127.0.0.1", local_port))
forged.connect(("127.0.0.1", peer_port))
print(json.dumps(protocol.release(manager_socket, forged)))
"""


@pytest.mark.skipif(os.getuid() != 0, reason="needs root for a network namespace")
def test_release_of_rebuilt_connection_is_refused(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    """A socket with the very address pair of a handed-out connection, but another connection
    (built in a network namespace of its own), must not be taken back into the pool."""
    m = start_manager(echo.target, 2)
    assert m.stats()["release_identity"] == "so_cookie"
    before = loose_fds(m)
    sock, _ = protocol.acquire(m.sock_path)
    local, peer = sock.getsockname(), sock.getpeername()
    try:
        done = subprocess.run(
            ["unshare", "-n", sys.executable, "-c", FORGE_RELEASE, m.sock_path, str(local[1]), str(peer[1])],
            capture_output=True,
            text=True,
            timeout=30,
            env=env(),
            cwd=REPO,
        )
        if done.returncode != 0 and "unshare" in done.stderr:
            pytest.skip(f"cannot create a network namespace here: {done.stderr.strip()[-200:]}")
        assert done.returncode == 0, done.stderr
        reply = json.loads(done.stdout.strip().splitlines()[-1])
        assert reply["reused"] is False
        assert reply["reason"] == "unknown_connection"
        # The real one still comes back.
        assert protocol.release(m.sock_path, sock)["reused"] is True
    finally:
        sock.close()
    assert_still_serving(m, before)


# ---------------------------------------------------------------- 9: input checks


def _run_manager(tmp: Path, *args: str, config: Any = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "components.pool_manager", "--socket", str(tmp / "m.sock"), *args]
    if config is not None:
        (tmp / "cfg.json").write_text(json.dumps(config))
        argv += ["--config", str(tmp / "cfg.json")]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env(), cwd=REPO)


@pytest.mark.parametrize(
    ("args", "config", "key"),
    [
        (["--target", "127.0.0.1:9", "--max-clients", "-5"], None, "max_clients"),
        (["--target", "127.0.0.1:9", "--max-clients", "0"], None, "max_clients"),
        (["--target", "127.0.0.1:9", "--socket-mode", "9"], None, "socket_mode"),
        (["--target", "127.0.0.1:9", "--socket-mode", "1777"], None, "socket_mode"),
        ([], {"pools": {"echo": 5}}, "pools.echo"),
        ([], {"pools": {"echo": {"target": "127.0.0.1:9", "size": "2"}}}, "'size'"),
        ([], {"pools": {"echo": {"target": "127.0.0.1:9", "size": True}}}, "'size'"),
        ([], {"pools": {"echo": {"target": "127.0.0.1:9", "ttl": "1s"}}}, "'ttl'"),
        ([], {"allow_uids": "0", "pools": {"echo": {"target": "127.0.0.1:9"}}}, "allow_uids"),
        ([], {"max_clients": "10", "pools": {"echo": {"target": "127.0.0.1:9"}}}, "max_clients"),
        ([], {"socket_mode": [6, 6, 0], "pools": {"echo": {"target": "127.0.0.1:9"}}}, "socket_mode"),
    ],
)
def test_bad_configuration_is_a_clear_error(sockdir: Path, args: list[str], config: Any, key: str) -> None:
    done = _run_manager(sockdir, *args, config=config)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [json.loads(line) for line in done.stderr.splitlines() if '"config_error"' in line]
    assert errors, done.stderr
    message = errors[0]["error"]
    assert key in message and "must be" in message, message


# ------------------- dropped fds are counted, so a runtime that drops injected fds shows up in stats


def test_fd_dropped_report_is_counted_per_pool(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 2)
    before = loose_fds(m)
    for _ in range(3):
        assert protocol.request(m.sock_path, "report", pool="echo", event="fd_dropped")["ok"] is True
    protocol.request(m.sock_path, "report", pool="echo", event="fallback", reason="test")
    st = m.stats()["pools"]["echo"]
    assert st["fd_dropped"] == 3
    assert st["fallbacks_seen"] == 1
    assert_still_serving(m, before)
