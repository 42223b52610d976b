"""Fixtures of the pool manager tests: a short socket directory and managers stopped after each test."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))

from test_pool_manager_support import Manager, short_tmpdir


@pytest.fixture
def sockdir() -> Iterator[Path]:
    with short_tmpdir() as d:
        yield d


@pytest.fixture
def start_manager(sockdir: Path) -> Iterator[Callable[..., Manager]]:
    started: list[Manager] = []

    def start(target: str, size: int = 4, *extra: str, wait_ready: bool = True, name: str = "m.sock") -> Manager:
        m = Manager(sockdir / name, target, size, *extra, wait_ready=wait_ready)
        started.append(m)
        return m

    yield start
    for m in started:
        m.stop(signal.SIGKILL if m.proc.poll() is None else signal.SIGTERM)
