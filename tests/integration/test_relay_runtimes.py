"""A relayed connection end to end: host TCP connection to an echo server, relayed by a RelayHub to
one end of an AF_UNIX socketpair, whose other end is passed into a container over a bind-mounted
host socket. On runsc only this shape works (it drops TCP fds, imports AF_UNIX ones)."""

from __future__ import annotations

import array
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coldstart_bench.measure import runtimes as rt
from components.relay import CLOSED, RelayHub, RelayResult

pytestmark = pytest.mark.integration

PAYLOAD_BYTES = 1 << 20
REQUESTS = 20

# In the container: take the fd, do REQUESTS small round trips (timed), then push a payload
# through and compare the echo, half-close and read to the end.
CONTAINER_SCRIPT = r"""
import array, hashlib, json, os, socket, sys, time
n_req, size = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
s.connect("/relay/fd.sock")
msg, anc, _f, _a = s.recvmsg(16, socket.CMSG_SPACE(4))
fds = [fd for lvl, typ, data in anc for fd in array.array("i", data[: len(data) // 4 * 4])]
out = {"fd": bool(fds)}
if fds:
    c = socket.socket(fileno=fds[0])
    c.settimeout(20)
    family = c.family
    out["family"] = "AF_UNIX" if family == socket.AF_UNIX else str(family)
    rtts = []
    for i in range(n_req):
        line = b"request %d\n" % i
        t0 = time.perf_counter()
        c.sendall(line)
        got = b""
        while len(got) < len(line):
            got += c.recv(len(line) - len(got))
        rtts.append((time.perf_counter() - t0) * 1e6)
        assert got == line, got
    payload = os.urandom(size)
    c.sendall(payload)
    c.shutdown(socket.SHUT_WR)
    echoed = b""
    while True:
        chunk = c.recv(1 << 16)
        if not chunk:
            break
        echoed += chunk
    out.update(echo_ok=hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest(),
               echoed=len(echoed), rtt_us_median=sorted(rtts)[len(rtts) // 2])
print(json.dumps(out))
"""


def _echo_server() -> tuple[socket.socket, threading.Thread]:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(1 << 16):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return listener, t


@pytest.fixture(scope="module")
def image(docker_client: Any) -> str:
    return rt.default_probe_image(docker_client)


@pytest.fixture
def relay_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="csb-relay-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_echo_through_a_relay_into_a_container(docker_client: Any, image: str, relay_dir: Path, runtime: str) -> None:
    offered = rt.engine_runtimes(docker_client)
    if runtime not in offered:
        pytest.skip(rt.missing_runtime_message(runtime, offered))
    listener, echo = _echo_server()
    results: list[RelayResult] = []
    fd_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fd_sock.bind(str(relay_dir / "fd.sock"))
    os.chmod(relay_dir / "fd.sock", 0o777)
    fd_sock.listen(1)
    fd_sock.settimeout(60)
    with RelayHub() as hub, listener, fd_sock:
        hub.start()
        function_end, hub_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        hub.add(hub_end, socket.create_connection(listener.getsockname()), on_close=results.append)

        def hand_over() -> None:
            conn, _ = fd_sock.accept()
            with conn:
                fds = array.array("i", [function_end.fileno()])
                conn.sendmsg([b"ok"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            function_end.close()

        sender = threading.Thread(target=hand_over, daemon=True)
        sender.start()
        name = f"csb-relay-{runtime}-{uuid.uuid4().hex[:8]}"
        cpu0 = hub.stats.cpu_s
        out = docker_client.containers.run(
            image,
            ["python3", "-c", CONTAINER_SCRIPT, str(REQUESTS), str(PAYLOAD_BYTES)],
            runtime=runtime,
            network_mode="none",
            volumes={str(relay_dir): {"bind": "/relay", "mode": "rw"}},
            labels={rt.PROBE_LABEL: f"relay-{runtime}"},
            name=name,
            remove=True,
        )
        sender.join(10)
        report = json.loads(out.decode().strip().splitlines()[-1])
        deadline = time.monotonic() + 20
        while not results and time.monotonic() < deadline:
            time.sleep(0.01)
        echo.join(10)
    assert report["fd"] and report["family"] == "AF_UNIX", report
    assert report["echo_ok"] and report["echoed"] == PAYLOAD_BYTES, report
    (result,) = results
    relayed = PAYLOAD_BYTES + sum(len(b"request %d\n" % i) for i in range(REQUESTS))
    assert (result.outcome, result.bytes_a_to_b, result.bytes_b_to_a) == (CLOSED, relayed, relayed)
    cpu = hub.stats.cpu_s - cpu0
    print(f"{runtime}: relayed request rtt median {report['rtt_us_median']:.0f} us; hub cpu {cpu:.4f} s")
