"""Connecting to the Docker engine, with an error that says what to do when there is none."""

from __future__ import annotations

import docker
import docker.errors

NO_ENGINE_HELP = (
    "no Docker engine answers ({detail}).\n"
    "  - Start one: `systemctl start docker`, or `dockerd &` (Debian: `apt-get install docker.io`).\n"
    "  - Or point DOCKER_HOST at a running engine.\n"
    "The benchmark runs every function as a fresh container, so it cannot run without an engine."
)


class EngineUnavailable(RuntimeError):
    pass


def connect(timeout: float = 10.0) -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=int(max(timeout, 60)))
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineUnavailable(NO_ENGINE_HELP.format(detail=str(exc).splitlines()[0][:200])) from exc
    return client
