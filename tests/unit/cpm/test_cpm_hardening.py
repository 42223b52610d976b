"""The manager between tenants: a released connection carries nothing of its last caller, secrets
reach only the backend, waiting callers that half-close get their reply, names and logins are
bounded. Real sockets, real processes, a real PostgreSQL where one is needed.

After every abuse the manager serves a normal acquire and holds as many descriptors as before
(``assert_still_serving``, as in the abuse tests).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import struct
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
    loose_fds,
    wait_for,
)

from components import pg_wire, protocol
from tests.support.pg_cluster import LocalCluster


class SlowBackend:
    """A TCP server on loopback: ``echo`` answers each complete line after ``delay`` seconds;
    ``silent`` accepts and never reads."""

    def __init__(self, mode: str = "echo", delay: float = 0.3, host: str = "127.0.0.1") -> None:
        self.mode, self.delay = mode, delay
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.create_server((host, 0), family=family, backlog=128)
        self.listener.settimeout(0.1)
        self.target = protocol.format_peer(self.listener.getsockname())
        self.conns: list[socket.socket] = []
        self.accepted = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            self.conns.append(conn)
            self.accepted += 1
            if self.mode == "echo":
                threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        buf = b""
        conn.settimeout(0.2)
        while not self.stopping:
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                time.sleep(self.delay)
                with contextlib.suppress(OSError):
                    conn.sendall(line + b"\n")

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.listener.close()


@pytest.fixture
def slow_manager(echo: Echo, sockdir: Path) -> Iterator[Callable[..., tuple[Manager, SlowBackend]]]:
    """A manager with a healthy pool "echo" and a pool "slow" in front of a SlowBackend."""
    started: list[tuple[Manager, SlowBackend]] = []

    def start(mode: str = "echo", delay: float = 0.3, size: int = 2, **slow: Any) -> tuple[Manager, SlowBackend]:
        backend = SlowBackend(mode, delay)
        slow_pool = {"target": backend.target, "size": size, **slow}
        cfg = {"pools": {"echo": {"target": echo.target, "size": 2}, "slow": slow_pool}}
        (sockdir / "cfg.json").write_text(json.dumps(cfg))
        m = Manager(sockdir / "m.sock", echo.target, 2, "--config", str(sockdir / "cfg.json"))
        started.append((m, backend))
        return m, backend

    yield start
    for m, backend in started:
        m.stop(signal.SIGKILL if m.proc.poll() is None else signal.SIGTERM)
        backend.stop()


def read_line(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    got = b""
    with contextlib.suppress(TimeoutError):
        while not got.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
    return got


def assert_next_callers_read_only_their_own(m: Manager, pool: str, count: int, wait: float) -> None:
    """Every connection the pool hands out now answers exactly what its caller sent, nothing older."""
    held = []
    try:
        for i in range(count):
            sock, _ = protocol.acquire(m.sock_path, pool, timeout=5)
            held.append(sock)
            mine = f"caller-{i}\n".encode()
            sock.sendall(mine)
            assert read_line(sock, wait) == mine
    finally:
        for s in held:
            s.close()


# ---------------------------------------------------------------- dirty release


def test_release_while_the_answer_is_on_its_way_is_not_reused(slow_manager: Callable[..., Any]) -> None:
    m, _ = slow_manager("echo", 0.3)
    before = loose_fds(m)
    sock, _ = protocol.acquire(m.sock_path, "slow")
    sock.sendall(b"first-callers-secret\n")
    reply = protocol.release(m.sock_path, sock, "slow")
    sock.close()
    assert reply["reused"] is False and reply["reason"] == "request_in_flight", reply
    time.sleep(0.4)  # the answer has arrived wherever the connection is now
    assert_next_callers_read_only_their_own(m, "slow", 3, wait=2.0)
    assert m.stats()["pools"]["slow"]["discard_release"] == 1
    assert_still_serving(m, before)


def test_release_after_a_half_written_request_is_not_reused(slow_manager: Callable[..., Any]) -> None:
    m, _ = slow_manager("echo", 0.01)
    before = loose_fds(m)
    sock, _ = protocol.acquire(m.sock_path, "slow")
    sock.sendall(b"complete\n")
    assert read_line(sock, 2) == b"complete\n"
    time.sleep(0.05)
    sock.sendall(b"half-written-without-newline")
    reply = protocol.release(m.sock_path, sock, "slow")
    sock.close()
    assert reply["reused"] is False and reply["reason"] == "request_in_flight", reply
    assert_next_callers_read_only_their_own(m, "slow", 3, wait=2.0)
    assert_still_serving(m, before)


def test_release_with_a_completed_exchange_is_reused(slow_manager: Callable[..., Any]) -> None:
    m, _ = slow_manager("echo", 0.01)
    before = loose_fds(m)
    for _ in range(3):
        sock, _ = protocol.acquire(m.sock_path, "slow")
        sock.sendall(b"question\n")
        assert read_line(sock, 2) == b"question\n"
        reply = protocol.release(m.sock_path, sock, "slow")
        sock.close()
        assert reply == {"ok": True, "op": "release", "pool": "slow", "reused": True}
    assert_still_serving(m, before)


def test_release_with_unsent_bytes_is_not_reused(slow_manager: Callable[..., Any]) -> None:
    m, _ = slow_manager("silent")
    before = loose_fds(m)
    sock, _ = protocol.acquire(m.sock_path, "slow")
    sock.setblocking(False)
    queued = 0
    for _ in range(10_000):  # until the backend's window and our send buffer are full
        try:
            queued += sock.send(b"x" * 65536)
        except BlockingIOError:
            break
    assert queued > 0
    reply = protocol.release(m.sock_path, sock, "slow")
    sock.close()
    assert reply["reused"] is False and reply["reason"] == "unsent_data", reply
    assert_still_serving(m, before)


def _owner_of(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETOWN)


def test_released_socket_options_flags_and_owner_never_reach_the_next_caller(
    echo: Echo, start_manager: Callable[..., Manager]
) -> None:
    size = 2
    m = start_manager(echo.target, size)
    before = loose_fds(m)
    # The owner for SIGIO: a throwaway process (SIGIO's default action ends it, not this test).
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        sock, _ = protocol.acquire(m.sock_path)
        sock.sendall(b"ping\n")
        assert read_line(sock, 2) == b"ping\n"
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 7, 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 999)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 5))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x10)
        fcntl.fcntl(sock.fileno(), fcntl.F_SETOWN, bystander.pid)
        flags = fcntl.fcntl(sock.fileno(), fcntl.F_GETFL)
        fcntl.fcntl(sock.fileno(), fcntl.F_SETFL, flags | os.O_ASYNC | os.O_APPEND)
        reply = protocol.release(m.sock_path, sock)
        sock.close()
        assert reply["reused"] is True, (reply, m.logs()[-1500:])
        assert {"TCP_CORK", "TCP_NODELAY", "SO_RCVTIMEO", "SO_KEEPALIVE", "TCP_KEEPIDLE", "SO_LINGER", "IP_TOS"} <= set(
            reply["reset"]
        )
        assert {"file_flags", "owner"} <= set(reply["reset"])
        # Every connection the pool holds now, the released one among them, is as a fresh one.
        wait_for(lambda: m.stats()["pools"]["echo"]["idle"] >= size + 1, timeout=5)
        held = []
        for _ in range(size + 1):
            s, _ = protocol.acquire(m.sock_path)
            held.append(s)
            assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0
            assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16) == bytes(16)
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8) == bytes(8)
            assert s.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == 0
            assert _owner_of(s.fileno()) == 0
            assert fcntl.fcntl(s.fileno(), fcntl.F_GETFL) & (os.O_ASYNC | os.O_APPEND | os.O_NONBLOCK) == 0
            t0 = time.monotonic()
            s.sendall(b"a")
            assert s.recv(1) == b"a"
            assert time.monotonic() - t0 < 0.15  # not held back by a cork (200 ms)
        for s in held:
            s.close()
        assert bystander.poll() is None, "the first caller's process got SIGIO for another caller's traffic"
    finally:
        bystander.kill()
        bystander.wait()
    assert_still_serving(m, before)


# ---------------------------------------------------------------- the cap on backend connections


def test_backend_connections_are_capped_handed_out_included(slow_manager: Callable[..., Any]) -> None:
    cap = 3
    m, backend = slow_manager("echo", 0.0, size=2, max_backend=cap, exhaustion="connect", borrow_timeout=0.5)
    before = loose_fds(m)
    held = [protocol.acquire(m.sock_path, "slow")[0] for _ in range(cap)]
    time.sleep(0.3)  # room for any refill the hand-outs asked for
    st = m.stats()["pools"]["slow"]
    assert st["max_backend"] == cap and st["backend_connections"] == cap, st
    assert backend.accepted == cap
    # At the cap: a caller waits its borrow_timeout, then gets a clear exhausted error.
    with pytest.raises(protocol.PoolError) as exc:
        protocol.acquire(m.sock_path, "slow", timeout=5)
    assert exc.value.code == "pool_exhausted" and "max_backend" in exc.value.detail
    assert backend.accepted == cap
    # Queueing: a caller waiting at the cap is served as soon as a handed-out connection closes.
    threading.Timer(0.2, held.pop().close).start()
    sock, _ = protocol.acquire(m.sock_path, "slow", timeout=5)
    assert echo_roundtrip(sock)
    held.append(sock)
    assert m.stats()["pools"]["slow"]["backend_connections"] <= cap
    for s in held:
        s.close()
    # Every connection closed: the pool refills up to its size again, within the cap.
    wait_for(lambda: m.stats()["pools"]["slow"]["idle"] == 2, timeout=5)
    assert m.stats()["pools"]["slow"]["backend_connections"] <= cap
    assert_still_serving(m, before)


# ---------------------------------------------------------------- a waiting caller that half-closes


def test_waiting_caller_that_half_closes_still_gets_its_reply(start_manager: Callable[..., Manager]) -> None:
    # A listener that never accepts: the first connections sit in its backlog, later ones hang.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    target = f"127.0.0.1:{srv.getsockname()[1]}"
    held: list[socket.socket] = []
    try:
        m = start_manager(target, 1, "--exhaustion", "wait", "--borrow-timeout", "0.5", wait_ready=False)
        m.wait_socket()
        wait_for(lambda: _answers(m.sock_path), timeout=10, interval=0.05)  # listening, not just bound
        with contextlib.suppress(protocol.PoolError):
            for _ in range(3):  # take what the backlog let through
                held.append(protocol.acquire(m.sock_path, timeout=2)[0])
        before = loose_fds(m)
        for _ in range(3):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(m.sock_path)
            s.sendall(protocol.encode_request("acquire", pool="echo"))
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
            s.close()
            assert reply, "the half-closed caller was dropped without a reply"
            obj = json.loads(reply.split(b"\n")[0])
            assert obj["ok"] is True or obj["error"] in ("pool_exhausted", "backend_unavailable"), obj
        assert m.proc.poll() is None
        wait_for(lambda: loose_fds(m) == before, timeout=5)
    finally:
        for s in held:
            s.close()
        srv.close()


# ---------------------------------------------------------------- pool names


def test_pool_name_longer_than_a_request_can_carry_is_a_config_error(sockdir: Path) -> None:
    name = "p" * protocol.MAX_REQUEST_BYTES
    (sockdir / "cfg.json").write_text(json.dumps({"pools": {name: {"target": "127.0.0.1:9"}}}))
    argv = [sys.executable, "-m", "components.pool_manager", "--socket", str(sockdir / "m.sock")]
    argv += ["--config", str(sockdir / "cfg.json")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=REPO)
    try:
        _out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the manager started with a pool no request can name")
    assert proc.returncode == 2, err
    errors = [json.loads(line) for line in err.splitlines() if '"config_error"' in line]
    assert errors and "pool name" in errors[0]["error"], err


# ---------------------------------------------------------------- PostgreSQL: inline secret, login retries

INLINE_ROLE = "inline_pw_role"
INLINE_PASSWORD = "inl1ne-Pw-5b7d0c93"


def _pg_manager(sockdir: Path, echo: Echo, pg_pool: dict[str, Any], wait_ready: bool) -> Manager:
    cfg = {"pools": {"echo": {"target": echo.target, "size": 1}, "pg": pg_pool}}
    (sockdir / "cfg.json").write_text(json.dumps(cfg))
    m = Manager(sockdir / "m.sock", echo.target, 1, "--config", str(sockdir / "cfg.json"), wait_ready=wait_ready)
    if not wait_ready:
        m.wait_socket()
        wait_for(lambda: _answers(m.sock_path), timeout=10, interval=0.05)  # listening, not just bound
    return m


def _answers(sock_path: str) -> bool:
    try:
        return bool(protocol.request(sock_path, "ping", timeout=1)["ok"])
    except protocol.PoolError:
        return False


@pytest.fixture
def inline_role(cluster: LocalCluster) -> Iterator[str]:
    cluster.psql(f"DROP ROLE IF EXISTS {INLINE_ROLE}", database="postgres")
    cluster.psql(f"CREATE ROLE {INLINE_ROLE} LOGIN PASSWORD '{INLINE_PASSWORD}'", database="postgres")
    yield INLINE_ROLE
    cluster.psql(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{INLINE_ROLE}'", database="postgres"
    )
    cluster.psql(f"DROP ROLE IF EXISTS {INLINE_ROLE}", database="postgres")


def test_inline_postgres_password_opens_sessions_and_is_never_written(
    cluster: LocalCluster, inline_role: str, echo: Echo, sockdir: Path
) -> None:
    pool = {"kind": "postgres", "target": cluster.target, "user": inline_role, "database": cluster.database}
    pool.update({"password": INLINE_PASSWORD, "size": 2})
    m = _pg_manager(sockdir, echo, pool, wait_ready=False)
    try:
        wait_for(lambda: m.stats()["pools"]["pg"]["idle"] >= 1, timeout=20)
        before = loose_fds(m)
        sock, reply = protocol.acquire(m.sock_path, "pg", timeout=10)
        session = pg_wire.Session.adopt(sock, reply["meta"])
        assert session.simple_query("SELECT current_user")[0].scalar() == inline_role
        session.close()
        stats_text = json.dumps(m.stats())
        for text in (json.dumps(reply), stats_text, m.logs()):
            assert INLINE_PASSWORD not in text
        assert "***" in m.logs()  # the configuration is logged, redacted
        assert_still_serving(m, before)
    finally:
        m.stop()
    assert INLINE_PASSWORD not in m.logs()


def test_refused_postgres_login_is_retried_after_login_retry_not_at_connect_pace(
    cluster: LocalCluster, echo: Echo, sockdir: Path
) -> None:
    pool = {"kind": "postgres", "target": cluster.target, "user": cluster.user, "database": cluster.database}
    pool.update({"password": "surely-not-the-password", "size": 2})
    m = _pg_manager(sockdir, echo, pool, wait_ready=False)
    try:
        wait_for(lambda: m.stats()["pools"]["pg"]["connect_failures"] >= 1, timeout=20)
        wait_for(lambda: m.stats()["pools"]["pg"]["connecting"] == 0, timeout=10)
        before = loose_fds(m)
        time.sleep(3.5)
        st = m.stats()["pools"]["pg"]
        # One round of opens (at most the pool's size), then quiet until login_retry (15 s).
        assert st["connect_failures"] <= 2, st
        assert "28P01" in st["last_error"]
        with pytest.raises(protocol.PoolError) as exc:
            protocol.acquire(m.sock_path, "pg", timeout=5)
        assert exc.value.code == "backend_unavailable" and "28P01" in exc.value.detail
        retries = [e for e in m.log_events() if e["event"] == "connect_failed" and e.get("pool") == "pg"]
        assert retries and retries[0]["retry_in_s"] >= 15
        assert_still_serving(m, before)
    finally:
        m.stop()


# ---------------------------------------------------------------- name resolution


class NamespacedManager:
    """A manager in a mount namespace of its own whose /etc/hosts is ``hosts`` (rewritten in place
    by the test) and whose name service reads files only: resolution the test controls."""

    def __init__(self, sockdir: Path, hosts: Path, config: dict[str, Any], *extra: str) -> None:
        self.sock_path = str(sockdir / "m.sock")
        self.log_path = sockdir / "m.log"
        nsswitch = sockdir / "nsswitch.conf"
        nsswitch.write_text("hosts: files\n")
        (sockdir / "cfg.json").write_text(json.dumps(config))
        script = (
            f"mount --bind {hosts} /etc/hosts && mount --bind {nsswitch} /etc/nsswitch.conf && "
            f"exec {sys.executable} -m components.pool_manager --socket {self.sock_path} "
            f"--config {sockdir / 'cfg.json'} " + " ".join(extra)
        )
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", script], stdout=subprocess.DEVNULL, stderr=self._log, env=env(), cwd=REPO
        )
        self.proc_pid = self.proc.pid

    def stats(self) -> dict[str, Any]:
        return protocol.request(self.sock_path, "stats", timeout=3)

    def log_events(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def _can_unshare_mounts() -> bool:
    if os.getuid() != 0:
        return False
    done = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10)
    return done.returncode == 0


needs_mount_ns = pytest.mark.skipif(
    not _can_unshare_mounts(), reason="needs root and a mount namespace to control name resolution"
)


@pytest.fixture
def namespaced(sockdir: Path) -> Iterator[Callable[..., NamespacedManager]]:
    started: list[NamespacedManager] = []

    def start(hosts_text: str, config: dict[str, Any], *extra: str) -> NamespacedManager:
        hosts = sockdir / "hosts"
        hosts.write_text(hosts_text)
        m = NamespacedManager(sockdir, hosts, config, *extra)
        started.append(m)

        def answers() -> bool:
            assert m.proc.poll() is None, m.log_path.read_text()
            return _answers(m.sock_path)

        wait_for(answers, timeout=15, interval=0.05)
        return m

    yield start
    for m in started:
        m.stop()


def _rewrite_in_place(path: Path, text: str) -> None:
    """New content in the same inode: the bind mount inside the namespace sees it."""
    with open(path, "r+") as fh:
        fh.truncate(0)
        fh.write(text)


@needs_mount_ns
@pytest.mark.parametrize("connector", [False, True], ids=["in-loop", "connector-process"])
def test_every_resolved_address_is_tried_in_order(
    namespaced: Callable[..., NamespacedManager], connector: bool
) -> None:
    """A dual-stack name whose backend listens only on ::1 (the IPv4 address, tried first, refuses)."""
    backend = SlowBackend("echo", 0.0, host="::1")
    try:
        port = int(backend.target.rsplit(":", 1)[1])
        config = {"pools": {"dual": {"target": f"dual-cpm-test:{port}", "size": 2}}}
        m = namespaced("127.0.0.1 dual-cpm-test\n::1 dual-cpm-test\n", config, *(["--connector-process"] * connector))
        wait_for(lambda: m.stats()["pools"]["dual"]["idle"] == 2, timeout=10)
        before = loose_fds(m)
        st = m.stats()["pools"]["dual"]
        assert st["address"] == f"[::1]:{port}", st
        if not connector:  # (the connector process resolves on its own)
            assert st["addresses"] == [f"127.0.0.1:{port}", f"[::1]:{port}"]
        sock, reply = protocol.acquire(m.sock_path, "dual")
        assert reply["peer"] == f"[::1]:{port}"
        assert echo_roundtrip(sock)
        sock.close()
        assert any(e["event"] == "address_in_use" and e["address"] == f"[::1]:{port}" for e in m.log_events())
        wait_for(lambda: loose_fds(m) == before, timeout=5)
    finally:
        backend.stop()


@needs_mount_ns
def test_resolver_outage_keeps_the_last_good_addresses_for_resolve_keep(
    namespaced: Callable[..., NamespacedManager], echo: Echo
) -> None:
    pool = {"target": f"cpm-backend-test:{echo.port}", "size": 2, "resolve_ttl": 0.2, "resolve_keep": 3.0}
    pool.update({"backoff_max": 0.2, "borrow_timeout": 1.0})
    m = namespaced("127.0.0.1 cpm-backend-test\n", {"pools": {"b": pool}}, "--health-interval", "0.2")
    wait_for(lambda: m.stats()["pools"]["b"]["idle"] == 2, timeout=10)
    before = loose_fds(m)
    _rewrite_in_place(Path(m.sock_path).parent / "hosts", "# the name is gone\n")
    outage_start = time.monotonic()
    # Through the outage: every hand-out needs a new connection, to the address the name had.
    for _ in range(6):
        sock, _ = protocol.acquire(m.sock_path, "b", timeout=3)
        assert echo_roundtrip(sock)
        sock.close()
        time.sleep(0.25)
    assert time.monotonic() - outage_start < 3.0
    assert m.stats()["pools"]["b"]["backend_up"] is True
    assert any(e["event"] == "resolve_failed" and e["kept"] == [echo.target] for e in m.log_events())
    # Bounded: past resolve_keep without an answer, the addresses are dropped and the pool says why.
    time.sleep(max(0.0, outage_start + 3.5 - time.monotonic()))

    def refused() -> bool:
        try:
            s, _ = protocol.acquire(m.sock_path, "b", timeout=3)
        except protocol.PoolError as exc:
            assert exc.code in ("backend_unavailable", "pool_exhausted"), exc
            return True
        s.close()
        return False

    wait_for(refused, timeout=10, interval=0.1)
    assert "resolve" in m.stats()["pools"]["b"]["last_error"]
    # The name is back: the pool recovers, with the descriptors it had.
    _rewrite_in_place(Path(m.sock_path).parent / "hosts", "127.0.0.1 cpm-backend-test\n")
    wait_for(lambda: m.stats()["pools"]["b"]["idle"] == 2, timeout=10)
    sock, _ = protocol.acquire(m.sock_path, "b", timeout=3)
    assert echo_roundtrip(sock)
    sock.close()
    wait_for(lambda: loose_fds(m) == before, timeout=5)


def test_postgres_pool_cap_keeps_sessions_below_max_backend(
    cluster: LocalCluster, inline_role: str, echo: Echo, sockdir: Path
) -> None:
    """Callers holding sessions cannot make the manager open more than max_backend of them."""
    cap = 3
    pool = {"kind": "postgres", "target": cluster.target, "user": inline_role, "database": cluster.database}
    pool.update({"password": INLINE_PASSWORD, "size": 2, "max_backend": cap, "borrow_timeout": 1.0})
    m = _pg_manager(sockdir, echo, pool, wait_ready=False)

    def sessions() -> int:
        sql = f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{inline_role}'"
        return int(cluster.psql(sql, database="postgres").strip())

    try:
        wait_for(lambda: m.stats()["pools"]["pg"]["idle"] == 2, timeout=20)
        before = loose_fds(m)
        held = [protocol.acquire(m.sock_path, "pg", timeout=10)[0] for _ in range(cap)]
        with pytest.raises(protocol.PoolError) as exc:
            protocol.acquire(m.sock_path, "pg", timeout=5)
        assert exc.value.code == "pool_exhausted" and "max_backend" in exc.value.detail
        assert sessions() <= cap
        assert m.stats()["pools"]["pg"]["backend_connections"] == cap
        for s in held:
            s.close()
        wait_for(lambda: m.stats()["pools"]["pg"]["idle"] == 2, timeout=20)
        assert sessions() <= cap
        assert_still_serving(m, before)
    finally:
        m.stop()
