from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["pytester", "tests.support.leftovers"]

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    """The real engine; integration tests skip with the reason when none answers."""
    from coldstart_bench.measure.engine import EngineUnavailable, connect

    try:
        client = connect()
    except EngineUnavailable as exc:
        pytest.skip(f"integration test needs a Docker engine: {str(exc).splitlines()[0]}")
    yield client
    client.close()


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> tuple[str, ...]:
    """Arguments that load the plugin in a pytester subprocess: nothing when the package is
    installed (its pytest11 entry point loads it), else `-p` with the checkout on PYTHONPATH."""
    try:
        importlib.metadata.distribution("coldstart-bench")
        return ()
    except importlib.metadata.PackageNotFoundError:
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        return ("-p", "coldstart_bench.plugin")
