"""The Node.js function (components/node/function.js): direct, through the fd-3 entrypoint, fallback."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from coldstart_bench import phases

sys.path.insert(0, str(Path(__file__).parent))

from test_fd3_entrypoint import CC, Setup, handed_out, run_json, through
from test_pool_manager_support import short_tmpdir

NODE = shutil.which("node") or shutil.which("nodejs")
FUNCTION_JS = Path(__file__).resolve().parents[2] / "components" / "node" / "function.js"

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="Node.js is not installed (apt-get install nodejs)"),
    pytest.mark.skipif(CC is None, reason="no C compiler (cc/gcc/clang) on PATH for the fd-3 entrypoint"),
]


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    with short_tmpdir() as d:
        s = Setup(d)
        try:
            yield s
        finally:
            s.stop()


def node(*args: str) -> list[str]:
    assert NODE is not None
    return [NODE, str(FUNCTION_JS), *args]


def test_node_direct(setup: Setup) -> None:
    rc, rec = run_json(node("--mode", "direct", "--target", f"localhost:{setup.echo.port}", "--payload-size", "200"))
    assert rc == 0 and rec["ok"] is True, rec
    assert rec["path"] == "direct" and rec["runtime"].startswith("node v")
    assert rec["peer"] == setup.echo.target and rec["fd_check"]["ok"] is True
    assert rec["acquire_us"] == pytest.approx(rec["resolve_us"] + rec["handshake_us"], abs=0.2)
    assert phases.check(rec) == [] and rec["library_load_us"] == 0
    assert rec["request_rtt_us"] > 0 and rec["fd_recv_us"] is None
    assert isinstance(rec["t_main_ns"], int) and rec["t_main_ns"] <= rec["t_connected_ns"] <= rec["t_end_ns"]


def test_node_through_entrypoint_adopts_fd3(setup: Setup) -> None:
    before = handed_out(setup.manager)
    rc, rec = run_json(
        # A dead target: only fd 3 can make it ok.
        through(setup, ["--socket", setup.manager.sock_path], node("--mode", "fd3", "--target", "127.0.0.1:1"))
    )
    assert rc == 0 and rec["ok"] is True, rec
    assert rec["path"] == "fd3" and rec["fallback_reason"] is None and rec["resolve_us"] is None
    assert rec["fd_check"]["ok"] is True and rec["fd_check"]["expected_peer"] == setup.echo.target
    assert rec["peer"] == setup.echo.target
    assert 0 < rec["fd_recv_us"] == rec["acquire_us"] <= rec["connect_us"]
    assert phases.check(rec) == [] and rec["pre_main_us"] >= rec["acquire_us"]
    assert rec["t_entry_ns"] <= rec["t_exec_ns"] <= rec["t_main_ns"] <= rec["t_connected_ns"] <= rec["t_end_ns"]
    assert rec["runtime_startup_us"] > 0 and isinstance(rec["pool_id"], int)
    assert handed_out(setup.manager) == before + 1


def test_node_falls_back_when_the_pool_refuses(setup: Setup) -> None:
    rc, rec = run_json(
        through(
            setup,
            ["--socket", setup.manager.sock_path, "--pool", "no-such-pool"],
            node("--mode", "fd3", "--target", setup.echo.target),
        )
    )
    assert rc == 0 and rec["ok"] is True, rec
    assert rec["path"] == "fallback" and rec["fallback_reason"].startswith("unknown_pool")
    assert rec["socket_attempt_us"] > 0 and rec["connect_us"] > rec["socket_attempt_us"]


def test_node_fd3_errors(setup: Setup) -> None:
    rc, rec = run_json(node("--mode", "fd3", "--no-fallback", "--target", setup.echo.target), {"LISTEN_FDS": "1"})
    assert rc == 1 and rec["ok"] is False and "no_listen_fds" in rec["error"]
    rc, rec = run_json(node("--mode", "direct", "--target", "127.0.0.1:1"))
    assert rc == 1 and rec["ok"] is False and "ECONNREFUSED" in rec["error"]
