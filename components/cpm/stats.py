"""Room: stats — the ``stats`` reply, the acquire-latency histogram, the open-fd count."""

from __future__ import annotations

import os
import time
from typing import Any

from components.cpm.core import ManagerCore
from components.cpm.model import LAT_BOUNDS_US
from components.protocol import format_peer


class StatsRoom(ManagerCore):
    # ---------------------------------------------------------------- stats / shutdown
    def stats_obj(self) -> dict[str, Any]:
        now = time.monotonic()
        pools = {}
        for name, pool in self.pools.items():
            pools[name] = {
                "kind": pool.cfg.kind,
                "target": pool.cfg.target,
                "size": pool.cfg.size,
                "min_idle": pool.cfg.min_idle,
                "idle": len(pool.idle),
                "connecting": pool.connecting + pool.checking,
                "waiters": len(pool.waiters),
                "backend_up": not pool.down,
                "last_error": pool.last_error,
                "exhaustion": pool.cfg.exhaustion,
                **pool.stats,
                "discards": pool.stats["discard_health"]
                + pool.stats["discard_ttl"]
                + pool.stats["discard_idle"]
                + pool.stats["discard_release"]
                + pool.stats["discard_fresh"],
                "settling": len(pool.settling),
                "address": pool.address,
                "max_backend": pool.cfg.max_backend,
                "backend_connections": self.backend_held(pool),
                "addresses": [format_peer(a) for _f, a in pool.addrs],
            }
        total = sum(self.lat_counts)
        return {
            "ok": True,
            "op": "stats",
            "uptime_s": round(now - self.started, 3),
            "pools": pools,
            "requests": self.requests,
            "clients": len(self.clients),
            "denied": self.denied,
            "release_identity": self.release_identity,
            "errors": dict(self.errors),
            "open_fds": open_fd_count(),
            "relay": self.relay_stats(),
            "acquire_latency_us": {
                "bounds": list(LAT_BOUNDS_US),
                "counts": list(self.lat_counts),
                "count": total,
                "p50": hist_quantile(self.lat_counts, 0.5),
                "p99": hist_quantile(self.lat_counts, 0.99),
            },
        }


def open_fd_count() -> int:
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # minus the listing's own descriptor
    except OSError:
        return -1


def hist_quantile(counts: list[int], q: float) -> float | None:
    """Upper bound of the bucket holding quantile q (conservative)."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= rank:
            return float(LAT_BOUNDS_US[i]) if i < len(LAT_BOUNDS_US) else float("inf")
    return None
