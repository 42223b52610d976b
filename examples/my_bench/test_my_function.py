"""A benchmark of your own on coldstart-bench's fixtures: cold starts of a function image, direct
and with an injected connection, timed by pytest-benchmark.

    pytest examples/my_bench/test_my_function.py -p no:xdist

The fixtures come with the plugin (loaded by its pytest11 entry point once the package is
installed; from a checkout, the repository's conftest.py loads it, or pass `-p coldstart_bench.plugin`).
Replace `function_image` with an image of your own function (see components/function.py for the
one JSON line it must print) to measure yours.
"""

from __future__ import annotations

from typing import Any

ROUNDS = 3


def test_injected_connection_is_ready_sooner(
    echo_server: Any, pool_manager: Any, function_image: Any, cold_start: Any
) -> None:
    direct = cold_start(function_image, mode="direct", target=echo_server)
    injected = cold_start(function_image, mode="socket", pool=pool_manager)
    assert direct.ok, direct.error
    assert injected.ok, injected.error
    assert direct.path == "direct" and injected.path == "socket"
    assert injected.handoff == "fd"  # the connection arrived as a file descriptor over the socket


def test_injected_cold_start_without_a_network(pool_manager: Any, function_image: Any, cold_start: Any) -> None:
    sample = cold_start(function_image, mode="socket", pool=pool_manager, network="none")
    assert sample.ok, sample.error
    assert sample.interfaces == "lo"  # only loopback: the connection came through the socket


def test_benchmark_socket_cold_start(benchmark: Any, pool_manager: Any, function_image: Any, cold_start: Any) -> None:
    samples = []

    def one() -> Any:
        sample = cold_start(function_image, mode="socket", pool=pool_manager)
        samples.append(sample)
        return sample

    benchmark.pedantic(one, rounds=ROUNDS, iterations=1)
    assert len(samples) == ROUNDS and all(s.ok for s in samples), [s.error for s in samples]
    benchmark.extra_info["connect_us"] = sorted(s.connect_us for s in samples)
    benchmark.extra_info["lifecycle_ms"] = sorted(s.lifecycle_ms for s in samples)
