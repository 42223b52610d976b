"""A Docker bridge network for a run's parts, labelled with the run."""

from __future__ import annotations

import contextlib
from typing import Any, Self

import docker
import docker.errors

from ..measure.lifecycle import StartStop
from .labels import new_run_id, run_id_of, run_labels


class BenchNetwork(StartStop):
    """``with BenchNetwork(client) as net:`` creates ``net.name``; leaving removes it."""

    def __init__(
        self, client: docker.DockerClient, *, name: str | None = None, labels: dict[str, str] | None = None
    ) -> None:
        self.client = client
        self.labels = dict(labels) if labels is not None else run_labels(new_run_id())
        self.name = name or f"csb-net-{run_id_of(self.labels)}"
        self._network: Any = None

    def start(self) -> Self:
        if self._network is None:
            self._network = self.client.networks.create(self.name, driver="bridge", labels=self.labels)
        return self

    def stop(self) -> None:
        if self._network is not None:
            network, self._network = self._network, None
            with contextlib.suppress(docker.errors.NotFound):
                network.remove()

    def __str__(self) -> str:
        return self.name
