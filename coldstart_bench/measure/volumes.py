"""Storage that lives where the engine runs: named Docker volumes instead of host directories.

A bind mount names a path on the engine's host, which is this machine only when the engine is
local. With ``DOCKER_HOST`` naming another engine (tcp, ssh, another socket) a host directory
created here would not exist there. A named volume is created by the engine on its own host, so
the pool manager's socket directory and the files it reads (config, password) work for local
and remote engines alike. Files go into a volume through a created, never started, helper
container (``put_archive``), so nothing but the Docker API is needed.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

HELPER_MOUNT = "/volume"


@dataclass(frozen=True)
class VolumeFile:
    content: bytes
    mode: int = 0o644


def files_archive(files: Mapping[str, VolumeFile]) -> bytes:
    """A tar archive of the files (root-owned, with their modes) for ``put_archive``."""
    buffer = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, item in sorted(files.items()):
            if not name or name.startswith("/") or ".." in name.split("/"):
                raise ValueError(f"volume file name {name!r} must be a relative path inside the volume")
            info = tarfile.TarInfo(name)
            info.size = len(item.content)
            info.mode = item.mode
            info.mtime = int(now)
            tar.addfile(info, io.BytesIO(item.content))
    return buffer.getvalue()


def create_volume(client: docker.DockerClient, name: str, labels: Mapping[str, str]) -> str:
    client.volumes.create(name=name, labels=dict(labels))
    return name


def put_files(
    client: docker.DockerClient,
    volume: str,
    files: Mapping[str, VolumeFile],
    helper_image: str,
    labels: Mapping[str, str],
) -> None:
    """Write files into a volume through a helper container that is created but never started."""
    helper: Any = client.containers.create(
        helper_image,
        command=["true"],
        volumes={volume: {"bind": HELPER_MOUNT, "mode": "rw"}},
        labels=dict(labels),
        network_mode="none",
    )
    try:
        if not helper.put_archive(HELPER_MOUNT, files_archive(files)):
            raise RuntimeError(f"the engine refused to write into volume {volume}")
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            helper.remove(force=True)


def remove_volume(client: docker.DockerClient, name: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        client.volumes.get(name).remove(force=True)
