"""`coldstart-bench doctor` against the real engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from coldstart_bench.doctor import FAMILIES

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def _doctor(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    argv = [sys.executable, "-m", "coldstart_bench", "doctor", *args]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)


def test_doctor_reports_the_engine_and_every_family(docker_client: docker.DockerClient) -> None:
    proc = _doctor()
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    version = docker_client.version()["Version"]
    info = docker_client.info()
    assert f"Docker {version}" in text
    assert f"storage     {info['Driver']}" in text
    assert f"cgroup      v{info['CgroupVersion']}" in text
    for family in FAMILIES:
        assert f"  {family.name:<11}" in text, family.name
    # The probe ran on the engine (the delay image exists after any benchmark run) or fell back.
    assert "(engine probe)" in text or "(this machine)" in text


def test_doctor_json_agrees_with_the_engine(docker_client: docker.DockerClient) -> None:
    proc = _doctor("--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["info"]["Driver"] == docker_client.info()["Driver"]
    assert "runc" in data["info"]["Runtimes"]
    assert {f["name"] for f in data["families"]} == {f.name for f in FAMILIES}
    assert all(f["ok"] or f["todo"] for f in data["families"]), "a family that cannot run says what to do"
    left = docker_client.containers.list(all=True, filters={"label": "coldstart-bench.role=doctor-probe"})
    assert left == [], "the probe container is removed"
