"""What a result was measured on: recorded next to every run so numbers can be compared honestly."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker

from ..results import EnvironmentRecord


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def cpu_steal_ticks() -> tuple[int, int]:
    """(steal, total) jiffies from /proc/stat; a delta over the run tells CPU stolen by the hypervisor."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        values = [int(v) for v in fields]
        return (values[7] if len(values) > 7 else 0, sum(values))
    except (OSError, ValueError, IndexError):
        return (0, 0)


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cgroup_version() -> str:
    return "2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "1"


def capture(client: docker.DockerClient | None) -> EnvironmentRecord:
    env: dict[str, Any] = {
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "harness_commit": _git_commit(),
        "loadavg_start": loadavg(),
        "cgroup_version_host": _cgroup_version(),
    }
    if client is not None:
        try:
            info = client.info()
            version = client.version()
            runtimes = info.get("Runtimes", {})
            env.update(
                {
                    "docker_server": version.get("Version"),
                    "docker_api": version.get("ApiVersion"),
                    "containerd": (info.get("ContainerdCommit") or {}).get("ID"),
                    "runc": (info.get("RuncCommit") or {}).get("ID"),
                    "default_runtime": info.get("DefaultRuntime"),
                    "runtimes": sorted(runtimes),
                    "storage_driver": info.get("Driver"),
                    "cgroup_version": info.get("CgroupVersion"),
                    "cgroup_driver": info.get("CgroupDriver"),
                    "engine_cpus": info.get("NCPU"),
                    "engine_memory_bytes": info.get("MemTotal"),
                }
            )
            for component in version.get("Components", []) or []:
                if component.get("Name") == "runc":
                    env["runc"] = component.get("Version")
        except docker.errors.DockerException as exc:
            env["docker_error"] = str(exc)
    return EnvironmentRecord.from_dict(env)


def finish(env: EnvironmentRecord, steal_start: tuple[int, int]) -> None:
    """Add end-of-run readings (load, CPU steal over the run)."""
    env.loadavg_end = loadavg()
    steal_end = cpu_steal_ticks()
    total = steal_end[1] - steal_start[1]
    env.steal_pct = round(100.0 * (steal_end[0] - steal_start[0]) / total, 2) if total > 0 else 0.0
    env.finished_utc = datetime.now(UTC).isoformat(timespec="seconds")
