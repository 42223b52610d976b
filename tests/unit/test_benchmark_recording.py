"""pytest-benchmark records one round per cold start, valued at the container lifecycle (no Docker)."""

from __future__ import annotations

import json

import pytest

TEST_FILE = """
from coldstart_bench.harness import Harness
from coldstart_bench.samples import Sample
from coldstart_bench.catalogue import by_id


def test_socket(benchmark):
    samples = [Sample("socket", i, "socket", f"c{i}", True, lifecycle_ms=ms)
               for i, ms in enumerate([610.0, 650.0, 700.0])]
    samples.append(Sample("socket", 3, "socket", "c3", False, lifecycle_ms=99999.0))  # failed: not a round
    Harness._record_benchmark(benchmark, by_id("socket"), samples)


def test_burst(benchmark):
    samples = [Sample("burst-2-direct", i, "direct", f"b{i}", True, lifecycle_ms=ms, burst=2)
               for i, ms in enumerate([1000.0, 1200.0, 900.0, 1100.0])]
    Harness._record_benchmark(benchmark, by_id("burst-2-direct"), samples)
"""


def test_rounds_are_lifecycles_in_seconds(
    pytester: pytest.Pytester, plugin: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under xdist the inner run inherits the worker's environment; pytest-benchmark would then
    # think it runs on a worker and record nothing.
    for var in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(var, raising=False)
    pytester.makepyfile(test_rec=TEST_FILE)
    result = pytester.runpytest_subprocess(*plugin, "-p", "no:cacheprovider", "--benchmark-json=out.json")
    result.assert_outcomes(passed=2)
    data = json.loads((pytester.path / "out.json").read_text())
    by_name = {b["name"]: b for b in data["benchmarks"]}
    socket = by_name["test_socket"]
    assert socket["stats"]["rounds"] == 3
    assert socket["stats"]["min"] == pytest.approx(0.610)
    assert socket["stats"]["max"] == pytest.approx(0.700)
    assert socket["options"]["timer"] == "docker-lifecycle"
    assert socket["extra_info"]["scenario"] == "socket"
    burst = by_name["test_burst"]
    # a burst round is valued at the mean lifecycle of its starts
    assert burst["stats"]["rounds"] == 2
    assert sorted([burst["stats"]["min"], burst["stats"]["max"]]) == pytest.approx([1.0, 1.1])
