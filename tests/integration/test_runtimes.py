"""The runtime probe on the real engine: runc passes a TCP fd; others as registered here."""

from __future__ import annotations

from typing import Any

import pytest

from coldstart_bench.measure import runtimes as rt

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def image(docker_client: Any) -> str:
    return rt.default_probe_image(docker_client)


@pytest.fixture(scope="module")
def offered(docker_client: Any) -> dict[str, Any]:
    return rt.engine_runtimes(docker_client)


def test_runc_delivers_an_injected_tcp_fd(docker_client: Any, image: str) -> None:
    probe = rt.probe_runtime(docker_client, "runc", image)
    assert probe.runs, probe.reason
    assert probe.tcp_fd.works and probe.unix_fd.works, probe.as_dict()
    assert probe.handoff == rt.INJECTED
    assert not docker_client.containers.list(all=True, filters={"label": f"{rt.PROBE_LABEL}=runc"})


def test_runsc_drops_tcp_fds_and_passes_unix_fds(docker_client: Any, image: str, offered: dict[str, Any]) -> None:
    if "runsc" not in offered:
        pytest.skip(rt.missing_runtime_message("runsc", offered))
    probe = rt.probe_runtime(docker_client, "runsc", image, offered=offered)
    if not probe.runs:
        pytest.skip(f"runsc is registered but cannot run a container here: {probe.reason}")
    assert not probe.tcp_fd.arrived and "without its fd" in probe.tcp_fd.reason, probe.as_dict()
    assert probe.unix_fd.works, probe.as_dict()
    assert probe.handoff == rt.RELAY
    assert "TCP fd" in (probe.unsupported_reason("inject") or "")


def test_a_runtime_that_fails_reports_the_engine_error(docker_client: Any, image: str, offered: dict[str, Any]) -> None:
    if "crun" not in offered:
        pytest.skip(rt.missing_runtime_message("crun", offered))
    probe = rt.probe_runtime(docker_client, "crun", image, offered=offered)
    if probe.runs:
        assert probe.handoff == rt.INJECTED  # crun behaves like runc where it runs (cgroup v2 hosts)
    else:
        assert probe.reason and probe.handoff == rt.NOT_POSSIBLE
        assert not docker_client.containers.list(all=True, filters={"label": f"{rt.PROBE_LABEL}=crun"})


def test_an_unregistered_runtime_is_reported_with_the_configuration(docker_client: Any, image: str) -> None:
    probe = rt.probe_runtime(docker_client, "no-such-runtime", image)
    assert not probe.offered and '"runtimes"' in probe.reason and "SIGHUP" not in probe.reason
    assert "kill -HUP" in probe.reason
