"""The function in both modes, as a real process, against a local echo server and pool manager."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coldstart_bench import phases

sys.path.insert(0, str(Path(__file__).parent))

from test_pool_manager_support import REPO, Echo, Manager, dead_port, env, short_tmpdir, wait_for

FIELDS = {
    "ok",
    "mode",
    "path",
    "error",
    "t_entry_ns",
    "t_main_ns",
    "t_connected_ns",
    "t_first_reply_ns",
    "t_end_ns",
    "library",
    "library_load_us",
    "acquire_us",
    "verify_us",
    "session_setup_us",
    "first_request_us",
    "pre_main_us",
    "resolve_us",
    "handshake_us",
    "fd_recv_us",
    "connect_us",
    "request_rtt_us",
    "peer",
    "fd_check",
    "interfaces",
    "released",
}


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


def run_function(*args: str) -> tuple[int, dict[str, Any], str]:
    out = subprocess.run(
        [sys.executable, "-m", "components.function", *args],
        capture_output=True,
        env=env(),
        cwd=REPO,
        timeout=30,
        check=False,
    )
    lines = out.stdout.decode().splitlines()
    assert len(lines) == 1, out.stdout  # exactly one JSON line
    return out.returncode, json.loads(lines[0]), out.stderr.decode()


def check_common(rec: dict[str, Any]) -> None:
    assert set(rec) >= FIELDS
    assert phases.check(rec) == []  # stamps in order; connect_us = acquire + verify + set-up (+ attempt)
    assert rec["request_rtt_us"] > 0 and rec["first_request_us"] == rec["request_rtts_us"][0]
    assert "lo" in rec["interfaces"]


def test_direct_mode(echo: Echo) -> None:
    rc, rec, _ = run_function("--mode", "direct", "--target", echo.target, "--payload-size", "200")
    assert rc == 0 and rec["ok"] is True and rec["error"] is None
    assert rec["mode"] == rec["path"] == "direct"
    check_common(rec)
    assert rec["resolve_us"] > 0 and rec["handshake_us"] > 0
    assert rec["acquire_us"] == pytest.approx(rec["resolve_us"] + rec["handshake_us"], rel=1e-6)
    assert rec["verify_us"] == rec["fd_check_us"] > 0 and rec["session_setup_us"] == 0
    assert rec["library_load_us"] == 0 and rec["library"] == "socket"
    assert rec["fd_recv_us"] is None
    assert rec["peer"] == echo.target
    assert rec["fd_check"]["ok"] is True
    assert rec["released"] is False


def test_direct_mode_resolves_names(echo: Echo) -> None:
    rc, rec, _ = run_function("--mode", "direct", "--target", f"localhost:{echo.port}")
    assert rc == 0 and rec["ok"], rec
    assert rec["peer"].endswith(f":{echo.port}")


def test_socket_mode(echo: Echo, manager: Manager) -> None:
    rc, rec, _ = run_function("--mode", "socket", "--socket", manager.sock_path, "--target", echo.target)
    assert rc == 0 and rec["ok"] is True, rec
    assert rec["mode"] == rec["path"] == "socket"
    check_common(rec)
    assert rec["fd_recv_us"] == rec["acquire_us"] > 0
    assert rec["connect_us"] == pytest.approx(rec["acquire_us"] + rec["verify_us"], rel=1e-6)
    assert rec["library_load_us"] == rec["protocol_import_us"] > 0 and rec["library"] == "components.pool_acquire"
    assert rec["resolve_us"] is None and rec["handshake_us"] is None
    assert rec["peer"] == echo.target
    check = rec["fd_check"]
    assert check.pop("local").startswith("127.0.0.1:")
    assert check == {
        "family": "AF_INET",
        "type": "SOCK_STREAM",
        "connected": True,
        "peer": echo.target,
        "expected_peer": echo.target,
        "peer_matches": True,
        "blocking": True,
        "ok": True,
    }
    assert isinstance(rec["pool_id"], int)


def test_socket_mode_release(echo: Echo, manager: Manager) -> None:
    before = manager.stats()["pools"]["echo"]["released_reused"]
    rc, rec, _ = run_function("--mode", "socket", "--socket", manager.sock_path, "--release")
    assert rc == 0 and rec["ok"] and rec["released"] is True
    assert manager.stats()["pools"]["echo"]["released_reused"] == before + 1


def test_fallback_when_manager_missing(echo: Echo) -> None:
    rc, rec, _ = run_function("--mode", "socket", "--socket", "/tmp/no-such-cpm.sock", "--target", echo.target)
    assert rc == 0 and rec["ok"] is True
    assert rec["mode"] == "socket" and rec["path"] == "fallback"
    assert rec["fallback_reason"].startswith("manager_unavailable")
    assert rec["socket_attempt_us"] > 0 and rec["resolve_us"] > 0 and rec["handshake_us"] > 0
    assert rec["connect_us"] == pytest.approx(
        rec["socket_attempt_us"] + rec["resolve_us"] + rec["handshake_us"] + rec["verify_us"], rel=1e-6
    )
    assert phases.check(rec) == []
    assert rec["peer"] == echo.target


def test_no_fallback_fails(echo: Echo) -> None:
    rc, rec, _ = run_function("--mode", "socket", "--socket", "/tmp/no-such-cpm.sock", "--no-fallback")
    assert rc == 1 and rec["ok"] is False
    assert "manager_unavailable" in rec["error"]
    assert rec["path"] == "socket"


def test_fallback_when_manager_killed_and_restart_on_stale_socket(echo: Echo) -> None:
    with short_tmpdir() as d:
        m = Manager(d / "m.sock", echo.target, 2)
        m.stop(signal.SIGKILL)
        rc, rec, _ = run_function("--mode", "socket", "--socket", m.sock_path, "--target", echo.target)
        assert rc == 0 and rec["path"] == "fallback", rec
        assert rec["fallback_reason"].startswith("manager_unavailable")
        m2 = Manager(d / "m.sock", echo.target, 2)
        try:
            rc, rec, _ = run_function("--mode", "socket", "--socket", m2.sock_path)
            assert rc == 0 and rec["path"] == "socket"
        finally:
            m2.stop()


def test_fallback_when_backend_unavailable_is_reported(echo: Echo) -> None:
    # The manager's backend is down, the function's direct target is up.
    with short_tmpdir() as d:
        m = Manager(d / "m.sock", f"127.0.0.1:{dead_port()}", 2, wait_ready=False)
        try:
            m.wait_socket()
            rc, rec, _ = run_function("--mode", "socket", "--socket", m.sock_path, "--target", echo.target)
            assert rc == 0 and rec["path"] == "fallback"
            assert rec["fallback_reason"].startswith("backend_unavailable")
            wait_for(lambda: m.stats()["pools"]["echo"]["fallbacks_seen"] == 1, timeout=3)
        finally:
            m.stop()


def test_direct_to_closed_port_fails() -> None:
    rc, rec, _ = run_function("--mode", "direct", "--target", f"127.0.0.1:{dead_port()}", "--timeout", "1")
    assert rc == 1 and rec["ok"] is False and "ConnectionRefused" in rec["error"]


def test_cli_help_and_bad_args() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "components.function", "--help"], capture_output=True, env=env(), cwd=REPO, check=False
    )
    assert out.returncode == 0 and b"--mode" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "components.function", "--mode", "carrier-pigeon"],
        capture_output=True,
        env=env(),
        cwd=REPO,
        check=False,
    )
    assert out.returncode == 2 and out.stdout == b""
