"""Pool manager, stats room: the ping and stats replies.

Against a real echo server, over real sockets, in real processes."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from test_pool_manager_support import (
    Echo,
    Manager,
)

from components import protocol


def test_ping_and_stats_fields(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 2)
    assert protocol.request(m.sock_path, "ping")["ok"] is True
    sock, _ = protocol.acquire(m.sock_path)
    sock.close()
    st = m.stats()
    pool = st["pools"]["echo"]
    for key in (
        "idle",
        "size",
        "min_idle",
        "connecting",
        "handed_out",
        "refills",
        "discards",
        "discard_health",
        "fallbacks_seen",
        "borrow_waits",
        "backend_up",
    ):
        assert key in pool, key
    assert st["open_fds"] > 0
    hist = st["acquire_latency_us"]
    assert hist["count"] == 1 == sum(hist["counts"])
    assert len(hist["counts"]) == len(hist["bounds"]) + 1
