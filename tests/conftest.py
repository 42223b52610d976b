from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

pytest_plugins = ["pytester"]

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    """The real engine; integration tests skip with the reason when none answers."""
    from coldstart_bench.engine import EngineUnavailable, connect

    try:
        client = connect()
    except EngineUnavailable as exc:
        pytest.skip(f"integration test needs a Docker engine: {str(exc).splitlines()[0]}")
    yield client
    client.close()
