"""The SYN-ACK delay on the real engine: only the handshake is delayed, and removal restores it.

Traffic goes only to the echo container on a bridge network this module creates.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from coldstart_bench.measure.delay import DelayError, SynAckDelay, detect_delay_backend
from coldstart_bench.measure.images import ImageSet, ensure_images
from coldstart_bench.measure.testbed import run_labels, sweep

pytestmark = pytest.mark.integration

PORT = 7000
DELAY_MS = 50.0
SAMPLES = 7


@pytest.fixture(scope="module")
def images(docker_client: Any) -> ImageSet:
    return ensure_images(docker_client, ["echo", "delay"], log=lambda _m: None)


@pytest.fixture(scope="module")
def run_id() -> str:
    return f"delay-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def echo(docker_client: Any, images: ImageSet, run_id: str) -> Iterator[tuple[str, str]]:
    """(container id, IP) of an echo server on a fresh bridge network."""
    labels = run_labels(run_id)
    network = docker_client.networks.create(f"csb-net-{run_id}", driver="bridge", labels=labels)
    try:
        container = docker_client.containers.run(
            images.echo,
            ["python3", "-m", "components.echo_server", "--host", "0.0.0.0", "--port", str(PORT)],
            detach=True,
            network=network.name,
            labels={**labels, "coldstart-bench.role": "echo"},
        )
        deadline = time.monotonic() + 30
        while b'"ready"' not in container.logs():
            container.reload()
            assert container.status != "exited", container.logs().decode(errors="replace")
            assert time.monotonic() < deadline, "echo server not ready within 30 s"
            time.sleep(0.05)
        container.reload()
        ip = container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        yield container.id, ip
    finally:
        sweep(docker_client, run_id)  # containers first, then the network
        with contextlib.suppress(Exception):
            network.remove()


def connect_ms(ip: str) -> float:
    started = time.perf_counter()
    with socket.create_connection((ip, PORT), timeout=5):
        return (time.perf_counter() - started) * 1000


def median_connect_ms(ip: str, n: int = SAMPLES) -> float:
    return statistics.median(connect_ms(ip) for _ in range(n))


def rtt_ms(sock: socket.socket, payload: bytes = b"ping-0123456789") -> float:
    started = time.perf_counter()
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(len(payload) - len(got))
        assert chunk, "echo server closed the connection"
        got += chunk
    elapsed = (time.perf_counter() - started) * 1000
    assert got == payload
    return elapsed


def median_rtt_ms(sock: socket.socket, n: int = SAMPLES) -> float:
    return statistics.median(rtt_ms(sock) for _ in range(n))


@pytest.mark.parametrize(
    "delay_ms", [pytest.param(DELAY_MS, id="50ms"), pytest.param(10.0, id="10ms"), pytest.param(100.0, id="100ms")]
)
def test_delay_hits_only_the_handshake_and_is_removed(
    docker_client: Any, images: ImageSet, echo: tuple[str, str], run_id: str, delay_ms: float
) -> None:
    container_id, ip = echo
    before = median_connect_ms(ip)
    assert before < 5, f"connect before the delay already {before:.2f} ms"

    with socket.create_connection((ip, PORT), timeout=5) as opened_before:
        rtt_before = median_rtt_ms(opened_before)
        delay = SynAckDelay(docker_client, images.delay, container_id, PORT, delay_ms, labels=run_labels(run_id))
        with delay:
            assert delay.backend in ("netem", "nfqueue")
            print(f"\nSYN-ACK delay backend: {delay.backend}")
            during = median_connect_ms(ip)
            rtt_during = median_rtt_ms(opened_before)
            with socket.create_connection((ip, PORT), timeout=5) as opened_during:
                rtt_new = median_rtt_ms(opened_during)
            sidecar_id = delay.container.id
        assert delay.clean_exit, "the sidecar did not remove its own qdisc/rule on SIGTERM"
        after = median_connect_ms(ip)
        rtt_after = median_rtt_ms(opened_before)

    print(
        f"connect median: before {before:.2f} ms, with {delay_ms:g} ms delay {during:.2f} ms, "
        f"after {after:.2f} ms; RTT on a pre-opened connection {rtt_before:.3f} / {rtt_during:.3f} / "
        f"{rtt_after:.3f} ms"
    )
    assert delay_ms <= during < delay_ms + 20, f"connect with the delay: {during:.2f} ms"
    # The data path is untouched: a connection opened before (or during) the delay
    # round-trips as fast as ever; only SYN-ACKs are held.
    assert rtt_during < delay_ms / 2, f"RTT over a connection opened before the delay: {rtt_during:.2f} ms"
    assert rtt_new < delay_ms / 2, f"RTT over a connection opened under the delay: {rtt_new:.2f} ms"
    assert after < 5, f"connect after removing the delay: {after:.2f} ms"
    assert rtt_after < 5
    assert not docker_client.containers.list(all=True, filters={"id": sidecar_id}), "sidecar left behind"


def test_concurrent_handshakes_each_get_the_delay_without_queueing(
    docker_client: Any, images: ImageSet, echo: tuple[str, str], run_id: str
) -> None:
    container_id, ip = echo
    results: list[float] = []
    lock = threading.Lock()

    def one() -> None:
        ms = connect_ms(ip)
        with lock:
            results.append(ms)

    with SynAckDelay(docker_client, images.delay, container_id, PORT, DELAY_MS, labels=run_labels(run_id)):
        threads = [threading.Thread(target=one) for _ in range(16)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        wall = (time.perf_counter() - started) * 1000
    assert len(results) == 16
    assert min(results) >= DELAY_MS
    # Serialised holding would take 16 x 50 ms.
    assert wall < 3 * DELAY_MS, f"16 concurrent handshakes took {wall:.1f} ms: {sorted(results)}"


def test_detected_backend_matches_what_auto_uses(
    docker_client: Any, images: ImageSet, echo: tuple[str, str], run_id: str
) -> None:
    detected = detect_delay_backend(docker_client, images.delay, labels=run_labels(run_id))
    assert detect_delay_backend(docker_client, images.delay) == detected  # cached
    with SynAckDelay(docker_client, images.delay, echo[0], PORT, 5, labels=run_labels(run_id)) as delay:
        assert delay.backend == detected


def test_unusable_backend_fails_with_the_sidecar_logs(
    docker_client: Any, images: ImageSet, echo: tuple[str, str], run_id: str
) -> None:
    detected = detect_delay_backend(docker_client, images.delay)
    if detected != "nfqueue":
        pytest.skip("this kernel has netem, so there is no failing backend to request")
    delay = SynAckDelay(docker_client, images.delay, echo[0], PORT, 50, backend="netem", labels=run_labels(run_id))
    with pytest.raises(DelayError, match=r"(?s)exited with code 2.*netem"):
        delay.start()
    assert delay.container is None
    leftover = docker_client.containers.list(
        all=True, filters={"label": [f"coldstart-bench.run={run_id}", "coldstart-bench.role=synack-delay"]}
    )
    assert leftover == []
    assert median_connect_ms(echo[1]) < 10  # nothing was left applied


def _output_rules(docker_client: Any, images: ImageSet, container_id: str, run_id: str) -> str:
    out = docker_client.containers.run(
        images.delay,
        ["sh", "-c", "iptables -w 5 -S OUTPUT; tc qdisc show"],
        network_mode=f"container:{container_id}",
        cap_add=["NET_ADMIN"],
        labels={**run_labels(run_id), "coldstart-bench.role": "inspect"},
        remove=True,
    )
    return bytes(out).decode()


def test_killed_sidecar_leaves_nothing_applied(
    docker_client: Any, images: ImageSet, echo: tuple[str, str], run_id: str
) -> None:
    container_id, ip = echo
    delay = SynAckDelay(docker_client, images.delay, container_id, PORT, DELAY_MS, labels=run_labels(run_id))
    delay.start()
    try:
        assert "NFQUEUE" in _output_rules(docker_client, images, container_id, run_id) or delay.backend == "netem"
        delay.container.kill()  # SIGKILL: no chance to clean up itself
    finally:
        delay.stop()
    assert delay.clean_exit is False  # so the cleanup run did the removal
    left = _output_rules(docker_client, images, container_id, run_id)
    assert "NFQUEUE" not in left and "netem" not in left, left
    assert median_connect_ms(ip) < 10


# Runs in a network-less container: the netem backend's u32 filter under an htb root
# (whose classes count packets), checked to classify exactly the SYN-ACKs from the port.
# Tests the filter even on kernels without sch_netem, where the backend itself cannot run.
_FILTER_CHECK = """
import re, socket, subprocess, sys, threading
from components.synack_delay import netem_setup_commands, NETEM_BAND

def run(argv):
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode:
        print("SKIP " + " ".join(argv) + ": " + p.stderr.strip()); sys.exit(0)
    return p.stdout

run(["ip", "link", "set", "lo", "up"])
run(["tc", "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "1"])
for cls in ("1:1", f"1:{NETEM_BAND}"):
    run(["tc", "class", "add", "dev", "lo", "parent", "1:", "classid", cls, "htb", "rate", "10gbit"])
run(netem_setup_commands("lo", 7000, 50)[2])
srv = socket.create_server(("127.0.0.1", 7000))
def serve():
    for _ in range(3):
        c, _ = srv.accept(); d = c.recv(100); c.sendall(d); c.sendall(d); c.close()
t = threading.Thread(target=serve); t.start()
for _ in range(3):
    s = socket.create_connection(("127.0.0.1", 7000), timeout=5); s.sendall(b"hello"); s.recv(100); s.close()
t.join(10)
out = run(["tc", "-s", "class", "show", "dev", "lo"])
counts = {b.split()[0]: int(re.search(r"Sent \\d+ bytes (\\d+) pkt", b).group(1)) for b in out.split("class htb")[1:]}
print("COUNTS", counts[f"1:{NETEM_BAND}"], counts["1:1"])
"""


def test_netem_filter_classifies_exactly_the_synacks(docker_client: Any, images: ImageSet, run_id: str) -> None:
    out = docker_client.containers.run(
        images.delay,
        ["python3", "-c", _FILTER_CHECK],
        network_mode="none",
        cap_add=["NET_ADMIN"],
        labels={**run_labels(run_id), "coldstart-bench.role": "filter-check"},
        remove=True,
    )
    text = bytes(out).decode().strip()
    if text.startswith("SKIP"):
        pytest.skip(f"kernel lacks what the check needs: {text}")
    _, delayed, others = text.split()
    assert int(delayed) == 3, text  # one SYN-ACK per handshake, nothing else
    assert int(others) > 3 * 4, text  # the data, ACKs and FINs went elsewhere


def test_target_not_running_is_a_clear_error(docker_client: Any, images: ImageSet, run_id: str) -> None:
    stopped = docker_client.containers.create(
        images.echo, labels={**run_labels(run_id), "coldstart-bench.role": "stopped-target"}
    )
    try:
        with pytest.raises(DelayError, match="is it running"):
            SynAckDelay(docker_client, images.delay, stopped.id, PORT, 10, labels=run_labels(run_id)).start()
    finally:
        stopped.remove(force=True)
