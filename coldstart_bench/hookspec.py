"""Hooks other plugins and conftests can implement to extend coldstart-bench."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .catalogue import Catalogue


@pytest.hookspec
def pytest_coldstart_bench_catalogue(config: pytest.Config, catalogue: Catalogue) -> None:
    """Called once at configure time with the run's scenario catalogue: register scenarios of your
    own (`catalogue.register(Scenario(...))`, e.g. read from a file) before tests are generated."""
