"""The project's images for the parts: given as a tag, or built offline on first use
(measure/images.py: content-hashed tags, so an unchanged image is never rebuilt)."""

from __future__ import annotations

from collections.abc import Callable

from ..measure.engine import connect
from ..measure.images import ensure_images


def project_image(name: str, log: Callable[[str], None] = print) -> str:
    """The tag of ``images/<name>``, built if missing."""
    client = connect()
    try:
        return ensure_images(client, [name], log=log).get(name)
    finally:
        client.close()


class FunctionImage:
    """A function image: ``tag`` if given, else ``images/<name>`` built on first use.

    ``with FunctionImage() as image:`` (or ``image.tag``) gives the Python echo function's tag.
    """

    def __init__(self, tag: str | None = None, *, name: str = "function") -> None:
        self.name = name
        self._tag = tag

    @property
    def tag(self) -> str:
        if not self._tag:
            self._tag = project_image(self.name)
        return self._tag

    def __str__(self) -> str:
        return self.tag

    def __repr__(self) -> str:
        return f"FunctionImage({self._tag!r}, name={self.name!r})"

    def __enter__(self) -> FunctionImage:
        self.tag  # noqa: B018 - built (or found) now, not in the middle of a measurement
        return self

    def __exit__(self, *exc: object) -> None:
        return None  # an image outlives the run: it is content-addressed and shared


def image_tag(image: str | FunctionImage) -> str:
    return image.tag if isinstance(image, FunctionImage) else str(image)
