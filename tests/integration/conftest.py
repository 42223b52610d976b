"""Fixtures shared by the integration modules that build their own small testbed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from coldstart_bench.measure.testbed import run_labels, sweep


@pytest.fixture(scope="module")
def network(docker_client: Any, run_id: str) -> Iterator[str]:
    """A bridge network labelled with the module's ``run_id`` fixture; on teardown every container
    of that run is swept first, then the network is removed."""
    name = f"csb-net-{run_id}"
    net = docker_client.networks.create(name, driver="bridge", labels=run_labels(run_id))
    try:
        yield name
    finally:
        sweep(docker_client, run_id)  # containers first, then the network
        with contextlib.suppress(Exception):
            net.remove()
