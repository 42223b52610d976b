"""The Connection Pool Manager (components/pool_manager.py in the pool image) serving given pools.

Its Unix socket lives in ``socket_dir`` (a host directory; a temporary one by default) or in a
named volume (``socket_volume``: what a remote engine needs). A function reaches it by mounting
``function_binds()`` and asking ``socket_path`` for ``pool``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import docker.errors

from ..measure.database import manager_config
from .images import project_image
from .service import ServiceContainer, Volume

SOCKET_MOUNT = "/run/cpm"
SOCKET_NAME = "pool.sock"
CONFIG_MOUNT = "/run/cpm-config"
STATS_SNIPPET = (
    "import json, sys; from components.protocol import request; print(json.dumps(request(sys.argv[1], 'stats')))"
)
_FLAG_KEYS = frozenset({"target", "size"})


class PoolManager(ServiceContainer):
    """``with PoolManager(network="net", pools={"echo": {"target": "echo:7000", "size": 4}}) as pm:``

    One plain TCP pool is passed on the command line; anything else (several pools, other kinds)
    as a config file: written to a temporary directory, or already in a mounted volume
    (``config_path``, the path inside the container, with ``volumes`` mounting it). Several
    managers may share one ``socket_dir`` under different ``socket_name``s.
    """

    role = "pool"

    def __init__(
        self,
        image: str | None = None,
        *,
        network: str,
        pools: Mapping[str, Mapping[str, Any]],
        socket_dir: str | Path | None = None,
        socket_volume: str | None = None,
        config_path: str | None = None,
        socket_name: str = SOCKET_NAME,
        extra_args: Sequence[str] = (),
        volumes: Sequence[Volume] = (),
        name: str | None = None,
        labels: dict[str, str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        if not pools and config_path is None:
            raise ValueError("a pool manager needs at least one pool")
        if socket_dir is not None and socket_volume is not None:
            raise ValueError("give socket_dir or socket_volume, not both")
        self.pools = {name: dict(entry) for name, entry in pools.items()}
        self.socket_volume = socket_volume
        self._own_dirs: list[Path] = []
        if socket_volume is None and socket_dir is None:
            socket_dir = self._temp_dir("sock")
        self.socket_dir = Path(socket_dir) if socket_dir is not None else None
        self.socket_name = socket_name
        self.socket_path = f"{SOCKET_MOUNT}/{socket_name}"
        mounts: list[Volume] = [(self.socket_source, SOCKET_MOUNT, "rw"), *volumes]
        single = len(self.pools) == 1 and set(next(iter(self.pools.values()))) <= _FLAG_KEYS
        if config_path is None and not single:
            config_dir = self._temp_dir("config")
            (config_dir / "pool.json").write_text(manager_config(self.socket_path, self.pools))
            (config_dir / "pool.json").chmod(0o644)
            mounts.append((str(config_dir), CONFIG_MOUNT, "ro"))
            config_path = f"{CONFIG_MOUNT}/pool.json"
        command = ["python3", "-m", "components.pool_manager"]
        if config_path is not None:
            command += ["--config", config_path]
        else:
            pool, entry = next(iter(self.pools.items()))
            command += ["--target", str(entry["target"]), "--size", str(entry.get("size", 4))]
            command += ["--socket", self.socket_path, "--pool", pool]
        command += extra_args  # e.g. --socket-mode 0666 for functions of another uid, --refill-defer-ms
        super().__init__(
            image or project_image("pool"),
            command,
            network=network,
            name=name,
            labels=labels,
            volumes=mounts,
            start_timeout=start_timeout,
        )

    def _temp_dir(self, what: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"csb-cpm-{what}-", dir="/tmp"))
        path.chmod(0o755)  # function containers may run as another uid
        self._own_dirs.append(path)
        return path

    @property
    def socket_source(self) -> str:
        """What a function mounts at SOCKET_MOUNT: the host directory or the volume name."""
        return self.socket_volume if self.socket_volume is not None else str(self.socket_dir)

    @property
    def pool(self) -> str:
        """The first (for the fixture: the only) pool's name."""
        return next(iter(self.pools))

    def target_of(self, pool: str | None = None) -> str:
        return str(self.pools[pool or self.pool].get("target", ""))

    def function_binds(self) -> dict[str, dict[str, str]]:
        """The docker SDK binds that give a function the manager's socket."""
        return {self.socket_source: {"bind": SOCKET_MOUNT, "mode": "rw"}}

    def stats(self) -> dict[str, Any] | None:
        """The manager's stats reply, or None (not running, not answering). Asked from inside its
        container: the socket may live in a volume on a remote engine's host."""
        if not self.running:
            return None
        try:
            code, out = self.get_wrapped_container().exec_run(
                ["python3", "-c", STATS_SNIPPET, self.socket_path], demux=False
            )
            reply = json.loads(out) if code == 0 else None
        except (docker.errors.APIError, ValueError):
            return None
        return reply if isinstance(reply, dict) else None

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            for path in self._own_dirs:
                shutil.rmtree(path, ignore_errors=True)
            self._own_dirs.clear()
