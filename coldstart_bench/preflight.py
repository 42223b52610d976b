"""Checks a benchmark session makes once, before its first test: an engine answers and a base
image can be had. A failure ends the session with one message (``pytest.exit``) instead of the
same error once per test.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

# Exit status of a session stopped by a missing prerequisite (pytest's own "usage error").
PREFLIGHT_EXIT = int(pytest.ExitCode.USAGE_ERROR)


def base_image_problem(log: Callable[[str], None] = lambda _m: None) -> str | None:
    """None when the engine answers and the base image exists or could be provided (pulled or
    built offline now, as the first test would do); else the one message saying what to do."""
    from .measure.engine import EngineUnavailable, connect
    from .measure.images import ImageBuilder, ImageBuildError, build_lock

    try:
        client = connect()
    except EngineUnavailable as exc:
        return f"coldstart-bench: {exc}"
    try:
        with build_lock():
            ImageBuilder(client, log=log).base()
    except ImageBuildError as exc:
        return f"coldstart-bench: cannot build the images: {exc}"
    finally:
        client.close()
    return None


def run_preflight(config: pytest.Config, log: Callable[[str], None] = lambda _m: None) -> None:
    """Stop the whole session at once when a benchmark could not run anyway."""
    if config.getoption("collectonly") or hasattr(config, "workerinput"):
        return
    problem = base_image_problem(log)
    if problem is not None:
        pytest.exit(problem, returncode=PREFLIGHT_EXIT)
