"""The relay engine on real sockets: integrity, half-close, reset, back-pressure, many relays, fds.

Layout of every test: ``client`` (the function's end of an AF_UNIX socketpair) <-> hub <-> a TCP
loopback connection whose far end is ``peer`` (the pooled backend connection's server side).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from components.relay import CLOSED, RESET, STOPPED, RelayHub, RelayResult, splice_available

TIMEOUT_S = 20.0
MODES = [pytest.param(True, id="splice"), pytest.param(False, id="copy")]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        near = socket.create_connection(listener.getsockname())
        far, _ = listener.accept()
    return near, far


@dataclass
class Ends:
    client: socket.socket
    peer: socket.socket
    results: list[RelayResult]

    def close(self) -> None:
        self.client.close()
        self.peer.close()

    def wait_result(self) -> RelayResult:
        deadline = time.monotonic() + TIMEOUT_S
        while not self.results:
            assert time.monotonic() < deadline, "relay did not end"
            time.sleep(0.005)
        return self.results[0]


def connect(hub: RelayHub) -> Ends:
    client, hub_unix = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    hub_tcp, peer = tcp_pair()
    results: list[RelayResult] = []
    hub.add(hub_unix, hub_tcp, on_close=results.append)
    for s in (client, peer):
        s.settimeout(TIMEOUT_S)
    return Ends(client, peer, results)


@pytest.fixture(params=MODES)
def hub(request: pytest.FixtureRequest) -> Iterator[RelayHub]:
    if request.param and not splice_available():
        pytest.skip("os.splice is not available on this platform")
    h = RelayHub(zero_copy=request.param)
    h.start()
    yield h
    h.close()


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        data = sock.recv(min(1 << 20, n - len(chunks)))
        assert data, f"EOF after {len(chunks)} of {n} bytes"
        chunks += data
    return bytes(chunks)


def recv_all(sock: socket.socket) -> bytes:
    chunks = bytearray()
    while data := sock.recv(1 << 20):
        chunks += data
    return bytes(chunks)


def run_threads(*targets: object) -> None:
    errors: list[BaseException] = []

    def wrap(fn: object) -> None:
        try:
            fn()  # type: ignore[operator]
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(t,), daemon=True) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT_S * 2)
        assert not t.is_alive(), "worker thread hung"
    if errors:
        raise errors[0]


@pytest.mark.parametrize("size", [1, 4096, 3 * 1024 * 1024 + 17])
def test_random_payloads_arrive_intact_both_ways(hub: RelayHub, size: int) -> None:
    rng = random.Random(size)
    up, down = rng.randbytes(size), rng.randbytes(size // 2 + 1)
    ends = connect(hub)
    got: dict[str, bytes] = {}

    def client_side() -> None:
        ends.client.sendall(up)
        ends.client.shutdown(socket.SHUT_WR)
        got["down"] = recv_all(ends.client)

    def peer_side() -> None:
        ends.peer.sendall(down)
        ends.peer.shutdown(socket.SHUT_WR)
        got["up"] = recv_all(ends.peer)

    run_threads(client_side, peer_side)
    assert hashlib.sha256(got["up"]).digest() == hashlib.sha256(up).digest()
    assert got["down"] == down
    result = ends.wait_result()
    assert (result.outcome, result.bytes_a_to_b, result.bytes_b_to_a) == (CLOSED, len(up), len(down))
    assert result.zero_copy == hub.zero_copy
    ends.close()


def test_client_half_close_keeps_the_reply_direction_open(hub: RelayHub) -> None:
    ends = connect(hub)
    ends.client.sendall(b"request")
    ends.client.shutdown(socket.SHUT_WR)
    assert recv_all(ends.peer) == b"request"  # EOF reached the backend side
    assert not ends.results, "relay ended while one direction was still open"
    ends.peer.sendall(b"reply after the client's EOF")
    assert recv_exactly(ends.client, 28) == b"reply after the client's EOF"
    ends.peer.shutdown(socket.SHUT_WR)
    assert ends.client.recv(10) == b""
    assert ends.wait_result().outcome == CLOSED
    ends.close()


def test_backend_half_close_keeps_the_request_direction_open(hub: RelayHub) -> None:
    ends = connect(hub)
    ends.peer.sendall(b"greeting")
    ends.peer.shutdown(socket.SHUT_WR)
    assert recv_all(ends.client) == b"greeting"
    assert not ends.results
    ends.client.sendall(b"late request")
    assert recv_exactly(ends.peer, 12) == b"late request"
    ends.client.shutdown(socket.SHUT_WR)
    assert ends.peer.recv(10) == b""
    result = ends.wait_result()
    assert (result.outcome, result.bytes_a_to_b, result.bytes_b_to_a) == (CLOSED, 12, 8)
    ends.close()


def test_backend_reset_closes_the_client_end(hub: RelayHub) -> None:
    ends = connect(hub)
    ends.client.sendall(b"x")
    assert recv_exactly(ends.peer, 1) == b"x"
    ends.peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    ends.peer.close()
    result = ends.wait_result()
    assert result.outcome == RESET
    assert "reset" in result.detail.lower() or "broken" in result.detail.lower(), result.detail
    with contextlib.suppress(ConnectionResetError):
        assert ends.client.recv(10) == b""
    ends.client.close()


def test_client_reset_reaches_the_backend_as_a_tcp_reset(hub: RelayHub) -> None:
    ends = connect(hub)
    ends.peer.sendall(b"unread by the client")
    # Wait until the bytes sit in the client's receive queue, then close without reading them:
    # for AF_UNIX that is a reset (ECONNRESET) for the hub's end.
    with selectors.DefaultSelector() as sel:
        sel.register(ends.client, selectors.EVENT_READ)
        assert sel.select(TIMEOUT_S)
    ends.client.close()
    assert ends.wait_result().outcome == RESET
    with pytest.raises(ConnectionResetError):
        while ends.peer.recv(10):
            pass
    ends.peer.close()


def test_back_pressure_bounds_what_the_hub_holds(hub: RelayHub) -> None:
    ends = connect(hub)
    ends.client.setblocking(False)
    sent = 0
    chunk = bytes(64 * 1024)
    deadline = time.monotonic() + TIMEOUT_S
    stalls = 0
    # The peer does not read: the client must end up blocked, not the hub's memory growing.
    while stalls < 20:
        assert time.monotonic() < deadline and sent < 256 * 1024 * 1024, f"sent {sent} without blocking"
        try:
            sent += ends.client.send(chunk)
            stalls = 0
        except BlockingIOError:
            stalls += 1
            time.sleep(0.01)
    (relay,) = hub._relays.values()
    assert relay.a_to_b.pending <= relay.a_to_b.cap
    assert len(relay.a_to_b.buf) <= relay.a_to_b.cap
    ends.client.setblocking(True)
    ends.client.shutdown(socket.SHUT_WR)
    received = recv_all(ends.peer)
    assert len(received) == sent and received.count(0) == sent
    ends.peer.shutdown(socket.SHUT_WR)
    assert ends.wait_result().bytes_a_to_b == sent
    ends.close()


def test_many_concurrent_relays_and_no_descriptor_leaks() -> None:
    before = open_fds()
    relays = 40
    payload = random.Random(7).randbytes(200_000)
    with RelayHub() as hub:
        hub.start()
        all_ends = [connect(hub) for _ in range(relays)]
        assert hub.active == relays

        def exchange(ends: Ends) -> object:
            def run() -> None:
                ends.client.sendall(payload)
                ends.client.shutdown(socket.SHUT_WR)
                assert recv_all(ends.peer) == payload
                ends.peer.sendall(payload[::-1])
                ends.peer.shutdown(socket.SHUT_WR)
                assert recv_all(ends.client) == payload[::-1]

            return run

        run_threads(*(exchange(e) for e in all_ends))
        results = [e.wait_result() for e in all_ends]
        assert {r.outcome for r in results} == {CLOSED}
        assert len({r.relay_id for r in results}) == relays
        stats = hub.stats
        assert (stats.started, stats.closed, stats.active) == (relays, relays, 0)
        assert stats.bytes_total == 2 * relays * len(payload)
        assert stats.cpu_s > 0 and stats.cpu_ms_per_mb is not None
        for e in all_ends:
            e.close()
    assert open_fds() == before


def test_close_ends_running_relays_as_stopped_and_releases_fds() -> None:
    before = open_fds()
    hub = RelayHub()
    hub.start()
    ends = [connect(hub) for _ in range(3)]
    hub.close()
    assert [e.wait_result().outcome for e in ends] == [STOPPED] * 3
    assert hub.stats.stopped == 3
    for e in ends:
        assert e.client.recv(1) == b""  # the hub's end was closed
        e.close()
    assert open_fds() == before
    with pytest.raises(RuntimeError, match="closed"):
        hub.add(*socket.socketpair())


def test_embedded_in_another_event_loop() -> None:
    """The manager's way: register fileno() in its own loop and call poll(0) when readable."""
    with RelayHub() as hub, selectors.DefaultSelector() as outer:
        outer.register(hub.fileno(), selectors.EVENT_READ)
        ends = connect(hub)
        ends.client.sendall(b"ping")
        ends.client.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + TIMEOUT_S
        received = b""
        ends.peer.setblocking(False)
        while received != b"ping":
            assert time.monotonic() < deadline
            if outer.select(0.1):
                hub.poll(0)
            with contextlib.suppress(BlockingIOError):
                received += ends.peer.recv(10)
        ends.peer.shutdown(socket.SHUT_WR)
        while not ends.results:
            assert time.monotonic() < deadline
            if outer.select(0.1):
                hub.poll(0)
        assert ends.results[0].outcome == CLOSED
        ends.close()


def test_bad_input_is_refused_with_a_reason() -> None:
    with RelayHub() as hub:
        a, b = socket.socketpair()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with pytest.raises(ValueError, match="not a stream socket"):
            hub.add(a, udp)
        with pytest.raises(ValueError, match="same socket"):
            hub.add(a, a)
        b.close()
        with pytest.raises(ValueError, match="socket b is closed"):
            hub.add(a, b)
        a.close()
        udp.close()
    with pytest.raises(ValueError, match="at least 4096"):
        RelayHub(buffer_bytes=100)
