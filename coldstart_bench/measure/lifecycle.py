"""The context-manager shape the testbed's parts share: ``with Part(...) as p`` starts it, leaving
stops it, and a start that fails half-way is stopped too, so nothing it created is left behind."""

from __future__ import annotations

from typing import Any, Self


class StartStop:
    """Mix-in for parts with ``start() -> self`` and an idempotent ``stop()``."""

    def start(self) -> Any:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            started: Self = self.start()
            return started
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
