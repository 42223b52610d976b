"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from coldstart_bench.measure.host_processes import Echo
from tests.support.pg_cluster import LocalCluster, start_local_cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """A real throwaway server on 127.0.0.1 (scram-sha-256), one per module and worker."""
    started, reason = start_local_cluster()
    if started is None:
        pytest.skip(reason)
    yield started
    started.stop()


@pytest.fixture
def echo() -> Iterator[Echo]:
    """A real echo server subprocess on a free loopback port, for one test."""
    e = Echo()
    yield e
    e.stop()
