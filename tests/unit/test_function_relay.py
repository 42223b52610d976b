"""The function with a relayed connection (meta.handoff == "relay") and several requests per cold start."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_function import check_common, run_function
from test_pool_manager_support import Echo, Manager, short_tmpdir, wait_for


@pytest.fixture(scope="module")
def echo() -> Iterator[Echo]:
    e = Echo()
    yield e
    e.stop()


@pytest.fixture(scope="module")
def manager(echo: Echo) -> Iterator[Manager]:
    with short_tmpdir() as d:
        m = Manager(d / "m.sock", echo.target, 4)
        yield m
        m.stop()


def test_relayed_connection_is_accepted_and_echo_verified(echo: Echo, manager: Manager) -> None:
    relayed_before = manager.stats()["pools"]["echo"]["relayed"]
    rc, rec, err = run_function(
        "--mode", "socket", "--socket", manager.sock_path, "--handoff", "relay", "--requests", "5", "--no-fallback"
    )
    assert rc == 0, (rec, err)
    check_common(rec)
    assert rec["path"] == "socket" and rec["handoff"] == "relay"
    assert rec["fd_check"]["family"] == "AF_UNIX" and rec["fd_check"]["relay"] and rec["fd_check"]["ok"]
    assert rec["peer"] == echo.target  # the backend behind the relay, as the manager announced it
    assert len(rec["request_rtts_us"]) == 5 and all(v > 0 for v in rec["request_rtts_us"])
    assert min(rec["request_rtts_us"]) <= rec["request_rtt_us"] <= max(rec["request_rtts_us"])
    assert manager.stats()["pools"]["echo"]["relayed"] == relayed_before + 1
    wait_for(lambda: manager.stats()["relay"]["active"] == 0)


def test_injected_connection_with_several_requests(manager: Manager) -> None:
    rc, rec, err = run_function("--mode", "socket", "--socket", manager.sock_path, "--requests", "3")
    assert rc == 0, (rec, err)
    assert rec["handoff"] == "fd" and rec["fd_check"]["family"] == "AF_INET"
    assert len(rec["request_rtts_us"]) == 3


def test_unix_fd_without_relay_meta_is_refused() -> None:
    import socket

    from components.function import check_fd

    a, b = socket.socketpair()
    with a, b:
        assert not check_fd(a, "127.0.0.1:7000")["ok"]  # not announced as a relay: a TCP fd was due
        assert check_fd(a, "127.0.0.1:7000", relay=True)["ok"]


@pytest.mark.parametrize("args", [("--handoff", "splice"), ("--requests", "0")])
def test_bad_arguments(args: tuple[str, str]) -> None:
    from components.function import _parse

    with pytest.raises(ValueError):
        _parse(["--mode", "socket", *args])
