"""The shape every long-lived part shares: a container on a network that prints a JSON ready line.

``with Part(...) as part:`` creates it (named, labelled with a run), waits for its ready line, and
removes it on leaving; a part that does not become ready is removed at once and the error shows
its last log lines. Ryuk stays off: no image can be pulled for it, and everything is labelled and
removed by its owner (labels.sweep catches what a killed process left).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Sequence
from typing import Any, Self

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import docker
import docker.errors
from testcontainers.core.container import DockerContainer
from testcontainers.core.exceptions import ContainerStartException
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

from ..measure.lifecycle import StartStop
from .labels import LABEL_ROLE, new_run_id, run_labels

READY = r'"event":\s*"ready"'
# The pool manager restarts between blocks (fallback scenarios): the wait strategy's default 1 s poll
# would round every restart up to whole seconds of wall time with nothing measured.
READY_POLL_S = 0.05

Volume = tuple[str, str, str]  # (host directory or volume name, path in the container, "ro" | "rw")


class ContainerError(RuntimeError):
    """A part did not start or failed; the message says which and shows its last log lines."""


def tail(container: Any, lines: int = 15) -> str:
    """The last log lines of a docker SDK container, or why there are none."""
    try:
        raw = container.logs(tail=lines)
        return raw.decode("utf-8", "replace").strip() if isinstance(raw, bytes) else str(raw)
    except Exception:
        return "(no logs)"


def _created(container: DockerContainer) -> Any:
    """The docker SDK container behind a testcontainers one whose start failed, if it was created."""
    try:
        return container.get_wrapped_container()
    except ContainerStartException:
        return None


class ServiceContainer(StartStop):
    """One long-lived container started from ``image`` with ``command`` on ``network``.

    ``labels`` default to a run of its own (labels.run_labels); pass the run's labels to have it
    swept with the run. Subclasses name their command; ``role`` names the part in its label and
    default name.
    """

    role = "service"

    def __init__(
        self,
        image: str,
        command: Sequence[str],
        *,
        network: str,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        volumes: Sequence[Volume] = (),
        start_timeout: float = 60.0,
    ) -> None:
        self.image = image
        self.command = list(command)
        self.network = network
        self.labels = dict(labels) if labels is not None else run_labels(new_run_id())
        self.name = name or f"csb-{self.role}-{uuid.uuid4().hex[:8]}"
        self.volumes = tuple(volumes)
        self.start_timeout = start_timeout
        self._container: DockerContainer | None = None

    def start(self) -> Self:
        if self._container is not None:
            return self
        container = (
            DockerContainer(self.image)
            .with_name(self.name)
            .with_command(self.command)
            .with_kwargs(labels={**self.labels, LABEL_ROLE: self.role}, network=self.network)
            .waiting_for(
                LogMessageWaitStrategy(READY)
                .with_startup_timeout(int(self.start_timeout))
                .with_poll_interval(READY_POLL_S)
            )
        )
        for source, bind, mode in self.volumes:
            container = container.with_volume_mapping(source, bind, mode)
        try:
            self._container = container.start()
        except Exception as exc:
            wrapped = _created(container)
            logs = tail(wrapped) if wrapped is not None else "(container not created)"
            if wrapped is not None:
                with contextlib.suppress(docker.errors.APIError):
                    wrapped.remove(force=True)
            raise ContainerError(
                f"{self.name} ({self.image}) did not become ready: {exc}\nlast log lines:\n{logs}"
            ) from exc
        return self

    def stop(self) -> None:
        if self._container is not None:
            container, self._container = self._container, None
            container.stop()  # removes it (force) and closes its client

    @property
    def running(self) -> bool:
        return self._container is not None

    def get_wrapped_container(self) -> Any:
        """The docker SDK container (started parts only)."""
        if self._container is None:
            raise ContainerError(f"{self.name} is not started")
        return self._container.get_wrapped_container()

    @property
    def id(self) -> str:
        return str(self.get_wrapped_container().id)

    def logs(self, lines: int = 15) -> str:
        return tail(self.get_wrapped_container(), lines) if self._container is not None else "(not started)"

    def status(self) -> str:
        """'running', or what happened to the container, with its last log lines."""
        if self._container is None:
            return "stopped by the harness"
        wrapped = self.get_wrapped_container()
        try:
            wrapped.reload()
        except docker.errors.NotFound:
            return "container is gone (removed outside the harness)"
        state = wrapped.attrs.get("State", {})
        if state.get("Running"):
            return "running"
        return f"exited with code {state.get('ExitCode')} ({state.get('Error') or 'no error'}); logs:\n{tail(wrapped)}"
