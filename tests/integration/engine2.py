"""A second Docker engine on this machine: its own data root, exec root, socket and bridge.

It stands for "another engine, another host": nothing the harness puts on it may come from a
path of this machine, and its image store starts empty (the fresh-machine image build). It must
not disturb the shared engine: no iptables rules, and its own default bridge, because
``--bridge=none`` makes dockerd delete ``docker0`` (the shared engine's default bridge).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from coldstart_bench.measure.lifecycle import stop_group

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
ADDRESS_POOL = "10.214.0.0/16"  # the second engine's networks
# Its networks and default bridge (10.215.x): the shared engine's FORWARD policy is DROP and
# bridged traffic passes iptables (br_netfilter), so traffic inside them must be let through.
FORWARD_RANGE = "10.214.0.0/15"


class EngineStartError(RuntimeError):
    """The second engine could not start; the message says why (for a skip reason)."""


@dataclass
class SecondEngine:
    root: Path
    bridge: str
    subnet: str  # the bridge's address, inside FORWARD_RANGE, e.g. 10.215.254.1/24
    process: subprocess.Popen[bytes] | None = None
    forward_rule: list[str] | None = None

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def log_path(self) -> Path:
        return self.root / "dockerd.log"

    def command(self) -> list[str]:
        return [
            "dockerd",
            "--config-file", str(self.root / "daemon.json"),
            "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.root / "dockerd.pid"),
            "-H", self.docker_host,
            "--bridge", self.bridge,
            "--iptables=false",
            "--ip-masq=false",
            "--default-address-pool", f"base={ADDRESS_POOL},size=24",
        ]  # fmt: skip

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-10:])
        except OSError:
            return "(no log)"

    def start(self) -> SecondEngine:
        if os.geteuid() != 0:
            raise EngineStartError("a second dockerd needs root")
        if shutil.which("dockerd") is None or shutil.which("ip") is None:
            raise EngineStartError("dockerd or ip (iproute2) is not installed")
        self.root.mkdir(parents=True, exist_ok=True)
        # Same storage driver as the shared engine's host can offer (overlay may be unavailable).
        driver = os.environ.get("COLDSTART_ENGINE2_STORAGE_DRIVER", _shared_storage_driver())
        config = {"storage-driver": driver, "mtu": 1400} if driver else {}
        (self.root / "daemon.json").write_text(json.dumps(config) + "\n")
        for argv in (
            ["ip", "link", "add", "name", self.bridge, "type", "bridge"],
            ["ip", "addr", "add", self.subnet, "dev", self.bridge],
            ["ip", "link", "set", self.bridge, "up"],
        ):
            proc = subprocess.run(argv, capture_output=True, text=True)
            if proc.returncode != 0:
                self.stop()
                raise EngineStartError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
        self._allow_forwarding()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        env = {**os.environ, "DOCKER_HOST": self.docker_host}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self._log_tail()
                self.stop()
                raise EngineStartError(f"the second dockerd exited ({self.process.returncode}):\n{tail}")
            probe = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], env=env, capture_output=True)
            if probe.returncode == 0:
                return self
            time.sleep(0.5)
        tail = self._log_tail()
        self.stop()
        raise EngineStartError(f"the second dockerd did not answer within {START_TIMEOUT_S:.0f} s:\n{tail}")

    def _allow_forwarding(self) -> None:
        if shutil.which("iptables") is None:
            return
        chain = "DOCKER-USER"
        if subprocess.run(["iptables", "-w", "5", "-S", chain], capture_output=True).returncode != 0:
            chain = "FORWARD"
        rule = [chain, "-s", FORWARD_RANGE, "-d", FORWARD_RANGE, "-j", "ACCEPT"]
        proc = subprocess.run(["iptables", "-w", "5", "-I", *rule], capture_output=True, text=True)
        if proc.returncode != 0:
            self.stop()
            raise EngineStartError(f"cannot let the second engine's traffic pass iptables: {proc.stderr.strip()}")
        self.forward_rule = rule

    def stop(self) -> None:
        if self.forward_rule is not None:
            subprocess.run(["iptables", "-w", "5", "-D", *self.forward_rule], capture_output=True)
            self.forward_rule = None
        if self.process is not None:
            stop_group(self.process, signal.SIGTERM, STOP_TIMEOUT_S)  # dockerd and what it started
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)
        # Whatever dockerd left mounted under its roots would make rmtree fail; ignore it.
        for sub in ("exec", "data"):
            with contextlib.suppress(OSError):
                subprocess.run(["umount", "-R", "-l", str(self.root / sub)], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def _shared_storage_driver() -> str:
    try:
        proc = subprocess.run(
            ["docker", "info", "--format", "{{.Driver}}"],
            env={k: v for k, v in os.environ.items() if k != "DOCKER_HOST"},
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""
