"""The function side's lean pool client (components/pool_acquire.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from components import pool_acquire, protocol

sys.path.insert(0, str(Path(__file__).parent))

from test_pool_manager_support import REPO, env


@pytest.mark.parametrize(("pool", "handoff"), [("echo", None), ("pg", None), ("echo", "relay"), ("a b-c_9", None)])
def test_request_line_is_the_protocols_compact_json(pool: str, handoff: str | None) -> None:
    fields = {"pool": pool} | ({"handoff": handoff} if handoff else {})
    assert pool_acquire.acquire_line(pool, handoff) == protocol.encode_request("acquire", **fields)


def test_names_needing_escapes_are_refused_not_mangled() -> None:
    assert not pool_acquire.plain_name('a"b') and not pool_acquire.plain_name("a\\b")
    with pytest.raises(ValueError, match="JSON escaping"):
        pool_acquire.acquire("/nonexistent.sock", 'a"b')


def test_protocol_shares_the_errors() -> None:
    assert protocol.PoolError is pool_acquire.PoolError and protocol.FdDroppedError is pool_acquire.FdDroppedError


def test_fds_from_ancillary_reads_every_descriptor_without_array() -> None:
    a, b = socket.socketpair()
    try:
        data = a.fileno().to_bytes(4, sys.byteorder) + b.fileno().to_bytes(4, sys.byteorder) + b"\x01"
        fds = pool_acquire.fds_from_ancillary([(socket.SOL_SOCKET, socket.SCM_RIGHTS, data), (0, 0, b"xxxx")])
        assert fds == [a.fileno(), b.fileno()]  # the trailing partial int is ignored
    finally:
        a.close()
        b.close()


def test_importing_it_after_the_function_loads_no_other_module() -> None:
    """The library load the socket arm pays: nothing beyond the client itself."""
    code = (
        "import json, sys, components.function; before = set(sys.modules); import components.pool_acquire;"
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env(), timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ["components.pool_acquire"]


def test_a_refused_connection_is_manager_unavailable(tmp_path: Path) -> None:
    with pytest.raises(pool_acquire.PoolError) as info:
        pool_acquire.acquire(os.path.join(tmp_path, "absent.sock"), "echo", 0.5)
    assert info.value.code == pool_acquire.MANAGER_UNAVAILABLE
