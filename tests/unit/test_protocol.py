"""Pool protocol v1 wire helpers and client library, over real socket pairs."""

from __future__ import annotations

import array
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components import protocol


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_encode_request_is_compact_json_line() -> None:
    line = protocol.encode_request("acquire", pool="echo")
    assert line == b'{"v":1,"op":"acquire","pool":"echo"}\n'
    with pytest.raises(ValueError):
        protocol.encode_request("acquire", pool="x" * protocol.MAX_REQUEST_BYTES)


@given(pool=st.text(min_size=0, max_size=200), extra=st.dictionaries(st.text(max_size=10), st.integers(), max_size=5))
@settings(max_examples=100, deadline=None)
def test_encode_decode_roundtrip(pool: str, extra: dict[str, int]) -> None:
    fields = {k: v for k, v in extra.items() if k not in ("v", "op", "pool")}
    line = protocol.encode_request("stats", pool=pool, **fields)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert len(line) <= protocol.MAX_REQUEST_BYTES
    assert protocol.decode_line(line) == {"v": 1, "op": "stats", "pool": pool, **fields}


@given(pool=st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_prebuilt_acquire_line_equals_json(pool: str) -> None:
    assert protocol._acquire_line(pool) == protocol.encode_request("acquire", pool=pool)


@pytest.mark.parametrize("bad", [b"[]\n", b"3\n", b"nope\n", b"\xff\n"])
def test_decode_rejects_non_objects(bad: bytes) -> None:
    with pytest.raises(ValueError):
        protocol.decode_line(bad)


def test_split_and_format_peer() -> None:
    assert protocol.split_hostport("echo:7000") == ("echo", 7000)
    assert protocol.split_hostport("[::1]:5432") == ("::1", 5432)
    for bad in ("echo", "echo:", ":70", "echo:http", "echo:70000"):
        with pytest.raises(ValueError):
            protocol.split_hostport(bad)
    assert protocol.format_peer(("10.0.0.2", 7000)) == "10.0.0.2:7000"
    assert protocol.format_peer(("::1", 7000, 0, 0)) == "[::1]:7000"


def test_fd_passing_roundtrip_with_cloexec() -> None:
    a, b = socket.socketpair()
    r, w = os.pipe()
    try:
        protocol.send_line_with_fd(a, b'{"ok":true}\n', r)
        line, fd = protocol.recv_line_with_fd(b)
        assert line == b'{"ok":true}\n'
        assert fd is not None and fd not in (r, w)
        assert os.get_inheritable(fd) is False  # MSG_CMSG_CLOEXEC
        os.write(w, b"through the passed fd")
        assert os.read(fd, 100) == b"through the passed fd"
        os.close(fd)
    finally:
        for x in (r, w):
            os.close(x)
        a.close()
        b.close()


def test_extra_fds_are_closed_by_receiver() -> None:
    a, b = socket.socketpair()
    pipes = [os.pipe() for _ in range(3)]
    try:
        before = open_fds()
        fds = [p[0] for p in pipes]
        a.sendmsg([b'{"ok":true}\n'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())])
        _line, fd = protocol.recv_line_with_fd(b)
        assert fd is not None
        assert open_fds() == before + 1  # only the one we keep
        os.close(fd)
        assert open_fds() == before
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)
        a.close()
        b.close()


def test_line_split_across_segments_and_long_lines() -> None:
    a, b = socket.socketpair()
    try:
        a.sendall(b'{"ok":')
        a.sendall(b"true}\n")
        assert protocol.recv_line_with_fd(b) == (b'{"ok":true}\n', None)
        a.sendall(b"x" * 5000)
        with pytest.raises(ValueError):
            protocol.recv_line_with_fd(b, max_bytes=4096)
        a.close()
        with pytest.raises(ConnectionError):
            protocol.recv_line_with_fd(b)
    finally:
        b.close()


@pytest.fixture
def fake_manager(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """A one-shot Unix server answering with a canned reply (optionally with an fd)."""
    threads: list[threading.Thread] = []
    path = str(tmp_path / "fake.sock")
    if len(path) >= 100:
        import tempfile

        path = tempfile.mktemp(prefix="cpm-fake-", suffix=".sock", dir="/tmp")
    servers: list[socket.socket] = []

    def start(reply: bytes, with_fd: bool, join: bool = False) -> str:
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(1)
        servers.append(srv)

        def serve() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.recv(4096)
                if with_fd:
                    peer = socket.socket()
                    protocol.send_line_with_fd(conn, reply, peer.fileno())
                    peer.close()
                else:
                    conn.sendall(reply)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        threads.append(t)
        return path

    def join() -> None:
        for t in threads:
            t.join(5)

    start.join = join  # type: ignore[attr-defined]

    yield start
    for t in threads:
        t.join(5)
    for s in servers:
        s.close()
    if os.path.exists(path):
        os.unlink(path)


def test_acquire_error_reply_raises_pool_error(fake_manager: Callable[..., str]) -> None:
    path = fake_manager(b'{"ok":false,"error":"pool_exhausted","detail":"empty"}\n', False)
    with pytest.raises(protocol.PoolError) as exc:
        protocol.acquire(path)
    assert exc.value.code == "pool_exhausted" and exc.value.detail == "empty"


def test_error_reply_with_stray_fd_does_not_leak(fake_manager: Callable[..., str]) -> None:
    before = open_fds()
    path = fake_manager(b'{"ok":false,"error":"internal","detail":"x"}\n', True)
    with pytest.raises(protocol.PoolError):
        protocol.acquire(path)
    fake_manager.join()  # type: ignore[attr-defined]
    assert open_fds() == before + 1  # the fake server's listening socket, nothing else


def test_ok_reply_without_fd_is_a_distinct_error(fake_manager: Callable[..., str]) -> None:
    path = fake_manager(b'{"ok":true,"pool":"echo","peer":"1.2.3.4:5","id":1,"meta":{}}\n', False)
    with pytest.raises(protocol.FdDroppedError) as exc:
        protocol.acquire(path, report_dropped=False)
    assert exc.value.code == protocol.FD_DROPPED and isinstance(exc.value, protocol.PoolError)
    assert exc.value.reply["id"] == 1


def test_acquire_with_fd_returns_socket(fake_manager: Callable[..., str]) -> None:
    path = fake_manager(b'{"ok":true,"pool":"echo","peer":"x","id":7,"meta":{}}\n', True)
    sock, reply = protocol.acquire(path)
    assert reply["id"] == 7 and sock.type == socket.SOCK_STREAM
    sock.close()


def test_manager_unreachable(tmp_path: Path) -> None:
    with pytest.raises(protocol.PoolError) as exc:
        protocol.acquire(str(tmp_path / "missing.sock"))
    assert exc.value.code == protocol.MANAGER_UNAVAILABLE


def test_silent_manager_times_out(tmp_path: Path) -> None:
    import tempfile

    path = tempfile.mktemp(prefix="cpm-silent-", suffix=".sock", dir="/tmp")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    try:
        with pytest.raises(protocol.PoolError) as exc:
            protocol.request(path, "ping", timeout=0.2)
        assert exc.value.code == "timeout"
    finally:
        srv.close()
        os.unlink(path)


def test_error_codes_documented() -> None:
    assert {
        "bad_request",
        "unknown_pool",
        "pool_exhausted",
        "backend_unavailable",
        "forbidden",
        "timeout",
        "internal",
    } == protocol.ERROR_CODES
    assert json.loads(protocol.encode_request("ping"))["v"] == protocol.PROTOCOL_VERSION
