"""What the plugin's part fixtures share in one pytest session: the engine, one run id (so all
they create is labelled and swept together) and the images, built once."""

from __future__ import annotations

from collections.abc import Callable

import docker

from ..measure.engine import connect
from ..measure.images import ImageSet, ensure_images
from .labels import new_run_id, run_labels, sweep

FIXTURE_IMAGES = ("echo", "pool", "function")


class FixtureRun:
    def __init__(self, client: docker.DockerClient | None = None, log: Callable[[str], None] = print) -> None:
        self.client = client or connect()  # EngineUnavailable says what to do when none answers
        self.run_id = new_run_id()
        self.labels = run_labels(self.run_id)
        self.log = log
        self._images: ImageSet | None = None

    def image(self, name: str) -> str:
        if self._images is None:
            self._images = ensure_images(self.client, FIXTURE_IMAGES, log=self.log)
        return self._images.get(name)

    def close(self) -> list[str]:
        """Remove whatever of the run is left (a part whose fixture failed half-way)."""
        try:
            return sweep(self.client, self.run_id)
        finally:
            self.client.close()
