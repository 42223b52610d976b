"""The project's images on the real engine: built, not rebuilt, and runnable."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from coldstart_bench.measure.images import CORE_IMAGES, ImageSet, ensure_images, images_created_by_project
from coldstart_bench.measure.testbed import run_labels

pytestmark = pytest.mark.integration

LABELS = run_labels(f"images-test-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def built(docker_client: Any) -> ImageSet:
    return ensure_images(docker_client, CORE_IMAGES, log=lambda _m: None)


def test_core_images_and_base_exist(docker_client: Any, built: ImageSet) -> None:
    assert built.base_route.split(":")[0] in ("registry", "mmdebstrap", "env")
    for name in CORE_IMAGES:
        tag = built.get(name)
        assert tag.startswith(f"coldstart-bench/{name}:"), name
        docker_client.images.get(tag)
    assert {built.get(n) for n in CORE_IMAGES} <= set(images_created_by_project(docker_client))


def test_second_call_does_not_rebuild(docker_client: Any, built: ImageSet) -> None:
    messages: list[str] = []
    started = time.monotonic()
    again = ensure_images(docker_client, CORE_IMAGES, log=messages.append)
    elapsed = time.monotonic() - started
    assert again == built
    assert not [m for m in messages if m.startswith("building")], messages
    # Hashing and a few image look-ups; generous for a loaded machine (the build lock
    # may be held briefly by a parallel worker).
    assert elapsed < 60, f"second ensure_images took {elapsed:.1f} s"


@pytest.mark.parametrize("name", CORE_IMAGES)
def test_image_runs_the_components_package(docker_client: Any, built: ImageSet, name: str) -> None:
    out = docker_client.containers.run(
        built.get(name),
        ["python3", "-c", "import components, sys; print(sys.version_info[:2] >= (3, 11))"],
        remove=True,
        network_mode="none",
        labels=LABELS,
    )
    assert out.strip() == b"True"


def test_components_are_precompiled(docker_client: Any, built: ImageSet) -> None:
    out = docker_client.containers.run(
        built.function,
        ["sh", "-c", "ls /app/components/__pycache__ | grep -c '\\.pyc$'"],
        remove=True,
        network_mode="none",
        labels=LABELS,
    )
    assert int(out.strip()) > 0


def test_delay_image_has_its_tools(docker_client: Any, built: ImageSet) -> None:
    out = docker_client.containers.run(
        built.delay,
        ["sh", "-c", "command -v tc && command -v iptables && python3 -c 'import fnfqueue; print(\"ok\")'"],
        remove=True,
        network_mode="none",
        labels=LABELS,
    )
    assert out.strip().endswith(b"ok")
