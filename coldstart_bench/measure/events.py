"""Container lifecycle timestamps from the Docker event stream (one clock: the engine's CLOCK_REALTIME)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from typing import Any

import docker

LIFECYCLE_ACTIONS: tuple[str, ...] = ("create", "start", "die", "destroy")


class EventTimeout(TimeoutError):
    pass


class LifecycleEvents:
    """Follows `docker events` for containers carrying one label and keeps their lifecycle timeNano.

    A background thread reads the stream so no event is missed while a cold start runs; callers
    wait for the events they need with a timeout instead of polling the engine.
    """

    def __init__(self, client: docker.DockerClient, label: str) -> None:
        self._client = client
        self._label = label
        self._times: dict[str, dict[str, int]] = {}
        self._exit_codes: dict[str, int] = {}
        self._cond = threading.Condition()
        self._stream: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> LifecycleEvents:
        # Subscribe before any container is created; `since` guards against a slow subscription.
        self._stream = self._client.events(
            decode=True,
            since=int(time.time()) - 1,
            filters={"type": "container", "label": self._label},
        )
        self._thread = threading.Thread(target=self._pump, name="docker-events", daemon=True)
        self._thread.start()
        return self

    def _pump(self) -> None:
        try:
            for event in self._stream:
                action = str(event.get("Action") or event.get("status") or "")
                cid = str(event.get("id") or event.get("Actor", {}).get("ID") or "")
                if action not in LIFECYCLE_ACTIONS or not cid:
                    continue
                with self._cond:
                    self._times.setdefault(cid, {})[action] = int(event["timeNano"])
                    if action == "die":
                        attrs = event.get("Actor", {}).get("Attributes", {})
                        if "exitCode" in attrs:
                            self._exit_codes[cid] = int(attrs["exitCode"])
                    self._cond.notify_all()
        except Exception as exc:  # the stream closes with an error when we stop it
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def wait(
        self, container_id: str, actions: Iterable[str] = LIFECYCLE_ACTIONS, timeout: float = 30.0
    ) -> dict[str, int]:
        wanted = tuple(actions)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                have = self._times.get(container_id, {})
                if all(a in have for a in wanted):
                    return dict(have)
                if self._error is not None:  # the stream died: nothing more will arrive
                    raise EventTimeout(f"docker event stream ended ({self._error}) before {container_id[:12]}'s events")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    missing = [a for a in wanted if a not in have]
                    raise EventTimeout(
                        f"docker events {missing} for container {container_id[:12]} not seen within {timeout:.0f}s"
                    )
                self._cond.wait(remaining)

    def exit_code(self, container_id: str) -> int | None:
        """The exit code the engine reported with the container's `die` event."""
        with self._cond:
            return self._exit_codes.get(container_id)

    def forget(self, container_id: str) -> None:
        with self._cond:
            self._times.pop(container_id, None)
            self._exit_codes.pop(container_id, None)

    def stop(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LifecycleEvents:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
