"""The manager assembled from its rooms, its fd budget check and the command-line entry point."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import sys
import time
from types import FrameType

from components.cpm.backend_cap import BackendCapRoom
from components.cpm.policy import PolicyRoom
from components.cpm.refill import RefillRoom
from components.cpm.relaying import RelayRoom
from components.cpm.server import ServerRoom
from components.cpm.stats import StatsRoom
from components.pool_config import FDS_PER_RELAY, ConfigError, ManagerConfig, load_config


class Manager(ServerRoom, PolicyRoom, RefillRoom, StatsRoom, RelayRoom, BackendCapRoom):
    """One thread, one epoll set: every room works on the state in ``ManagerCore``."""

    def __init__(self, cfg: ManagerConfig) -> None:
        super().__init__(cfg)
        self.init_relays()


def raise_fd_limit(cfg: ManagerConfig) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; refuse a configuration that cannot fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    need = cfg.fd_budget()
    if need > soft:
        raise ConfigError(
            f"pools need up to {need} file descriptors (2 x size + max_connecting per pool, "
            f"{FDS_PER_RELAY} x max_relays {cfg.max_relays}, "
            f"+ max_clients {cfg.max_clients} + 64) but RLIMIT_NOFILE allows {soft} (hard limit {hard}); "
            f"lower --size/--max-clients or raise the limit (ulimit -n, docker --ulimit nofile=N:N)"
        )
    return soft, need


def config_error(event: str, error: str) -> int:
    """One JSON line on stderr and exit status 2: the configuration cannot work."""
    line = json.dumps({"ts": time.time(), "level": "error", "event": event, "error": error.replace("\n", " ")})
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    return 2


def main(argv: list[str] | None = None) -> int:
    # Until the loop handles them, a reload or stats request must not end the manager.
    for early in (signal.SIGHUP, signal.SIGUSR1):
        signal.signal(early, signal.SIG_IGN)
    try:
        cfg = load_config(argv)
        limit, need = raise_fd_limit(cfg)
    except ConfigError as exc:
        return config_error("config_error", str(exc))
    try:
        manager = Manager(cfg)
    except ConfigError as exc:
        return config_error("config_error", str(exc))
    except ImportError as exc:
        return config_error("plugin_import_failed", str(exc))
    manager.argv = list(sys.argv[1:] if argv is None else argv)

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        manager.stopping = True
        with contextlib.suppress(OSError):
            os.eventfd_write(manager.evfd, 1)

    def on_request(signum: int, _frame: FrameType | None) -> None:
        manager.signals_pending.add(signum)
        with contextlib.suppress(OSError):
            os.eventfd_write(manager.evfd, 1)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_request)
    signal.signal(signal.SIGUSR1, on_request)
    manager.log("starting", pools={n: p.as_dict() for n, p in cfg.pools.items()}, nofile=limit, fd_budget=need)
    try:
        manager.bind()
    except (ConfigError, OSError) as exc:
        manager.log("bind_failed", level="error", error=str(exc))
        manager.close()
        return 2
    try:
        manager.run()
    finally:
        manager.log("stopped", requests=manager.requests, log_dropped=manager.log_writer.dropped)
        manager.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
