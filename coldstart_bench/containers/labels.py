"""Labels on everything a run creates, and the sweep that removes what a run left behind.

Every container, network and volume carries the run's id and the creating process (pid and host):
a run removes its own things by id, and a later sweep removes those whose process is gone, so
parallel runs on one engine never remove each other's.
"""

from __future__ import annotations

import os
import socket
import uuid

import docker
import docker.errors

from ..measure.volumes import remove_volume

LABEL = "coldstart-bench"
LABEL_RUN = "coldstart-bench.run"
LABEL_PID = "coldstart-bench.pid"
# The pid is only meaningful on the machine that created the resource: a remote engine may be
# shared by harnesses on several hosts, and one must not sweep another's live run.
LABEL_HOST = "coldstart-bench.host"
LABEL_ROLE = "coldstart-bench.role"


def new_run_id() -> str:
    return uuid.uuid4().hex[:10]


def run_labels(run_id: str) -> dict[str, str]:
    return {LABEL: "1", LABEL_RUN: run_id, LABEL_PID: str(os.getpid()), LABEL_HOST: socket.gethostname()}


def run_id_of(labels: dict[str, str]) -> str:
    """The run id in a label set made by run_labels."""
    try:
        return labels[LABEL_RUN]
    except KeyError:
        raise ValueError(f"labels carry no {LABEL_RUN}: make them with run_labels(run_id)") from None


def sweep(client: docker.DockerClient, run_id: str | None = None) -> list[str]:
    """Remove containers, networks and volumes of one run (or of every run whose process is gone)."""
    removed: list[str] = []
    label = f"{LABEL_RUN}={run_id}" if run_id else LABEL
    # ignore_removed: on a shared engine a listed container may be gone before it is inspected.
    for container in client.containers.list(all=True, filters={"label": label}, ignore_removed=True):
        if run_id is None and owner_alive(container.labels):
            continue
        try:
            container.remove(force=True)
            removed.append(container.name)
        except docker.errors.NotFound:
            pass
    for network in client.networks.list(filters={"label": label}):
        if run_id is None and owner_alive(network.attrs.get("Labels") or {}):
            continue
        try:
            network.remove()
            removed.append(network.name)
        except docker.errors.NotFound:
            pass
    # Volumes last: the engine refuses to remove one a container still uses.
    for volume in client.volumes.list(filters={"label": label}):
        if run_id is None and owner_alive(volume.attrs.get("Labels") or {}):
            continue
        try:
            remove_volume(client, volume.name)
        except docker.errors.APIError:
            continue  # still in use by a container being removed; the next sweep takes it
        removed.append(volume.name)
    return removed


def owner_alive(labels: dict[str, str]) -> bool:
    """Whether the process that created a resource still runs; without a pid label, or when
    another host created it, we cannot tell, so the resource is left alone."""
    host = labels.get(LABEL_HOST)
    if host is not None and host != socket.gethostname():
        return True
    try:
        pid = int(labels.get(LABEL_PID, ""))
    except ValueError:
        return True
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
