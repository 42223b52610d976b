"""``coldstart-bench doctor``: what this machine and its engine offer, and which scenario
families can run here — with what to do for those that cannot.

Facts are gathered once (``gather``); requirements and families are data (``REQUIREMENTS``,
``FAMILIES``) evaluated against them, so a new family is one entry and the logic is testable
with a fake engine info dict. Kernel facts come from a short probe container on the engine
(its kernel, wherever it runs) when the delay image is built, else from this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import prereqs

ULP_PATH = Path("/proc/sys/net/ipv4/tcp_available_ulp")

# Runs in the delay image (python3, tc, iptables) with NET_ADMIN and no network: each line a fact.
PROBE_SCRIPT = r"""
import socket, subprocess
def ok(argv):
    return subprocess.run(argv, capture_output=True).returncode == 0
print("netem", ok(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]))
print("nfqueue", ok(["iptables", "-w", "5", "-A", "OUTPUT", "-o", "lo", "-j", "NFQUEUE", "--queue-bypass"]))
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
cli = socket.create_connection(srv.getsockname())
try:
    cli.setsockopt(socket.IPPROTO_TCP, 31, b"tls"); print("ktls", True)
except OSError:
    print("ktls", False)
"""


@dataclass
class KernelFacts:
    netem: bool | None = None
    nfqueue: bool | None = None
    ktls: bool | None = None
    source: str = "unknown"  # "engine probe" | "this machine"


@dataclass
class ImageState:
    name: str
    tag: str
    state: str  # "current" | "stale" | "not built"
    detail: str = ""


@dataclass
class Facts:
    docker_host: str = ""
    engine_local: bool = True
    engine_error: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    version: dict[str, Any] = field(default_factory=dict)
    kernel: KernelFacts = field(default_factory=KernelFacts)
    base_route: str = ""  # "" when no base image exists yet
    base_next: str = ""  # how a run would get one
    images: list[ImageState] = field(default_factory=list)
    host_programs: dict[str, bool] = field(default_factory=dict)

    @property
    def runtimes(self) -> list[str]:
        return sorted((self.info.get("Runtimes") or {}).keys())


# --- requirements and families (data) ------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    describe: str
    met: Callable[[Facts], bool]
    remedy: str


REQUIREMENTS: dict[str, Requirement] = {
    "engine": Requirement(
        "a Docker engine answers",
        lambda f: bool(f.info),
        "start one (`systemctl start docker` or `dockerd &`; Debian: apt-get install docker.io) or set DOCKER_HOST",
    ),
    "base": Requirement(
        "a base image exists or can be built",
        lambda f: bool(f.base_route or f.base_next),
        "apt-get install mmdebstrap (offline build), make python:3.11-slim-bookworm pullable, "
        "or set COLDSTART_BASE_IMAGE to a local Debian bookworm image with python3",
    ),
    "delay": Requirement(
        "a SYN-ACK delay backend (netem or NFQUEUE)",
        lambda f: bool(f.kernel.netem or f.kernel.nfqueue),
        "on the engine's host: modprobe sch_netem, or modprobe nfnetlink_queue xt_NFQUEUE",
    ),
    "ktls": Requirement(
        "kernel TLS (TCP_ULP tls)",
        lambda f: bool(f.kernel.ktls),
        "on the engine's host: modprobe tls (kernel built with CONFIG_TLS)",
    ),
    "alt-runtime": Requirement(
        "a second OCI runtime (runsc or crun) registered with the engine",
        lambda f: bool({"runsc", "crun"} & set(f.runtimes)),
        'install runsc (gVisor) or crun (apt-get install crun), add it under "runtimes" in '
        "/etc/docker/daemon.json, restart dockerd",
    ),
    "cc": Requirement(
        "a C compiler on this machine",
        lambda f: f.host_programs.get("C compiler", False),
        "apt-get install gcc libc6-dev",
    ),
}


@dataclass(frozen=True)
class Family:
    name: str
    describe: str
    requires: tuple[str, ...]
    optional: tuple[str, ...] = ()  # speeds it up or widens it; reported, never blocking


FAMILIES: tuple[Family, ...] = (
    Family(
        "thesis",
        "the thesis's five scenarios (injected, direct, direct with handshake delay)",
        ("engine", "base", "delay"),
    ),
    Family("extended", "no network, injected under delay, fallback, release", ("engine", "base", "delay")),
    Family("control", "the A/A control (the run's false-positive check)", ("engine", "base")),
    Family("pg", "PostgreSQL OLTP, authenticated sessions injected", ("engine", "base", "delay")),
    Family("burst", "N cold starts at once (thesis Fig. 2)", ("engine", "base")),
    Family("tls", "TLS 1.3 session injection", ("engine", "base"), optional=("ktls",)),
    Family("runtimes", "cold starts under runsc / crun", ("engine", "base", "alt-runtime")),
    Family("node", "Node.js function", ("engine", "base")),
    Family("c", "C function (fd-3 entrypoint)", ("engine", "base")),
    Family("pgbouncer", "PgBouncer comparison", ("engine", "base")),
    Family(
        "redis", "Redis backend, RESP function (--bench-scenarios examples/redis/scenarios.toml)", ("engine", "base")
    ),
    Family("user", "your own function and backend (--bench-scenarios FILE)", ("engine", "base")),
    Family("pool-load", "pool manager load benchmarks (C load generator)", ("cc",)),
)


@dataclass(frozen=True)
class FamilyStatus:
    name: str
    describe: str
    ok: bool
    missing: tuple[str, ...]  # requirement names not met
    todo: tuple[str, ...]  # what to do, one per missing requirement
    optional_missing: tuple[str, ...] = ()  # what to do for missing optional requirements


def family_status(
    facts: Facts, families: tuple[Family, ...] = FAMILIES, requirements: dict[str, Requirement] = REQUIREMENTS
) -> list[FamilyStatus]:
    out = []
    for family in families:
        unknown = [r for r in (*family.requires, *family.optional) if r not in requirements]
        if unknown:
            raise KeyError(f"family {family.name} needs unknown requirement(s) {unknown}")
        missing = tuple(r for r in family.requires if not requirements[r].met(facts))
        todo = tuple(f"{requirements[r].describe}: {requirements[r].remedy}" for r in missing)
        optional = tuple(
            f"{requirements[r].describe}: {requirements[r].remedy}"
            for r in family.optional
            if not requirements[r].met(facts)
        )
        out.append(FamilyStatus(family.name, family.describe, not missing, missing, todo, optional))
    return out


# --- gathering -------------------------------------------------------------------------------


def engine_is_local(docker_host: str) -> bool:
    """A unix socket or a loopback tcp address is this machine; anything else (ssh, tcp) is not."""
    if not docker_host or docker_host.startswith("unix://") or docker_host.startswith("npipe://"):
        return True
    host = docker_host.split("://", 1)[-1].split("@")[-1].rsplit(":", 1)[0].strip("[]")
    return docker_host.startswith("tcp://") and host in {"localhost", "127.0.0.1", "::1"}


def local_kernel_facts(ulp_path: Path = ULP_PATH) -> KernelFacts:
    """This machine's kernel: netem/NFQUEUE from loaded modules, kTLS by trying TCP_ULP."""
    facts = KernelFacts(source="this machine")
    facts.netem = Path("/sys/module/sch_netem").exists() or None
    facts.nfqueue = Path("/proc/net/netfilter/nfnetlink_queue").exists() or None
    try:
        facts.ktls = "tls" in ulp_path.read_text().split() or _try_ulp_tls()
    except OSError:
        facts.ktls = _try_ulp_tls()
    return facts


def _try_ulp_tls() -> bool:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with socket.create_connection(srv.getsockname()) as cli:
            try:
                cli.setsockopt(socket.IPPROTO_TCP, 31, b"tls")  # TCP_ULP
            except OSError:
                return False
            return True


def parse_probe_output(text: str) -> KernelFacts:
    facts = KernelFacts(source="engine probe")
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key in ("netem", "nfqueue", "ktls"):
            setattr(facts, key, value == "True")
    return facts


def engine_kernel_facts(client: Any, delay_image: str) -> KernelFacts:
    out = client.containers.run(
        delay_image,
        ["python3", "-c", PROBE_SCRIPT],
        cap_add=["NET_ADMIN"],
        network_mode="none",
        remove=True,
        labels={"coldstart-bench": "1", "coldstart-bench.role": "doctor-probe"},
    )
    return parse_probe_output(bytes(out).decode(errors="replace"))


class _NotBuilt(Exception):
    pass


def image_states(client: Any) -> tuple[str, str, list[ImageState]]:
    """(base route or "", how a run would get a base, per-image state) without building anything."""
    import docker.errors

    from .measure import images as im

    class ProbeWheels(im.WheelCache):
        def ensure(self, pins: Any) -> list[Path]:
            paths = []
            for pin in pins:
                path = self.cached(pin)
                if path is None:
                    raise _NotBuilt(f"wheel {pin} not cached")
                paths.append(path)
            return paths

    class Probe(im.ImageBuilder):
        def _provide_base(self) -> Any:
            env_ref = os.environ.get(im.BASE_ENV, "").strip()
            if env_ref and im._image_exists(self.client, env_ref):
                return im._Base(env_ref, f"env:{env_ref}")
            if not env_ref and im._image_exists(self.client, im.REGISTRY_BASE):
                return im._Base(im.REGISTRY_BASE, f"registry:{im.REGISTRY_BASE}")
            offline = self._offline_tag(self.base_packages, "base")
            if not env_ref and im._image_exists(self.client, offline):
                return im._Base(offline, "mmdebstrap")
            raise _NotBuilt("no base image yet")

        def _build_offline(self, packages: Any, tag: str) -> None:
            raise _NotBuilt(f"base variant {tag} not built")

        def _docker_build(self, context: Path, tag: str, buildargs: Any, route: str) -> None:
            raise _NotBuilt(f"base variant {tag} not built")

    probe = Probe(client, log=lambda _m: None, wheels=ProbeWheels())
    route = ""
    try:
        route = probe.base().route
        base_next = ""
    except _NotBuilt:
        if os.environ.get(im.BASE_ENV):
            base_next = ""  # the user's base is missing: nothing to fall back to
        elif shutil.which("mmdebstrap"):
            base_next = f"next run: pull {im.REGISTRY_BASE}, else build offline with mmdebstrap (installed)"
        elif not os.environ.get(im.SKIP_REGISTRY_ENV):
            base_next = f"next run: pull {im.REGISTRY_BASE} (no mmdebstrap for an offline build)"
        else:
            base_next = ""
    states = []
    for name in im.discover_images():
        built = [t for i in client.images.list(name=f"{im.PREFIX}/{name}") for t in i.tags]
        try:
            tag = probe.image_tag(name) if route else ""
        except (_NotBuilt, im.ImageBuildError, docker.errors.APIError) as exc:
            states.append(ImageState(name, "", "stale" if built else "not built", str(exc)))
            continue
        if tag and tag in built:
            states.append(ImageState(name, tag, "current"))
        elif built:
            states.append(ImageState(name, tag, "stale", f"built: {', '.join(sorted(built))}; rebuilt on the next run"))
        else:
            states.append(ImageState(name, tag, "not built", "built on the next run"))
    return route, base_next, states


def gather() -> Facts:
    docker_host = os.environ.get("DOCKER_HOST", "")
    facts = Facts(docker_host=docker_host, engine_local=engine_is_local(docker_host))
    facts.host_programs = {p.name: p.present() for p in prereqs.PREREQUISITES}
    from .measure.engine import EngineUnavailable, connect

    try:
        client = connect()
    except EngineUnavailable as exc:
        facts.engine_error = str(exc).splitlines()[0]
        facts.kernel = local_kernel_facts()
        return facts
    try:
        facts.info = client.info()
        facts.version = client.version()
        facts.base_route, facts.base_next, facts.images = image_states(client)
        delay = next((s.tag for s in facts.images if s.name == "delay" and s.state == "current"), "")
        try:
            facts.kernel = engine_kernel_facts(client, delay) if delay else local_kernel_facts()
        except Exception:  # a failed probe is no verdict: fall back to this machine's view
            facts.kernel = local_kernel_facts()
    finally:
        client.close()
    return facts


# --- rendering -------------------------------------------------------------------------------


def _yes(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "not found"}[value]


def render(facts: Facts) -> list[str]:
    lines = []
    where = facts.docker_host or "default socket"
    lines.append(f"engine        {where} ({'this machine' if facts.engine_local else 'remote'})")
    if facts.engine_error:
        lines.append(f"              not answering: {facts.engine_error}")
    else:
        info, version = facts.info, facts.version
        lines.append(f"  version     Docker {version.get('Version')} (API {version.get('ApiVersion')}), "
                     f"{info.get('OperatingSystem')}, kernel {info.get('KernelVersion')}")  # fmt: skip
        lines.append(f"  storage     {info.get('Driver')}")
        lines.append(f"  cgroup      v{info.get('CgroupVersion')} ({info.get('CgroupDriver')} driver)")
        lines.append(f"  runtimes    {', '.join(facts.runtimes)} (default {info.get('DefaultRuntime')})")
    k = facts.kernel
    lines.append(f"delay         netem {_yes(k.netem)}, NFQUEUE/iptables {_yes(k.nfqueue)} ({k.source})")
    lines.append(f"kernel TLS    {_yes(k.ktls)} ({k.source})")
    if facts.base_route:
        lines.append(f"base image    route {facts.base_route}")
    else:
        lines.append(f"base image    none yet; {facts.base_next or 'no route: ' + REQUIREMENTS['base'].remedy}")
    if facts.images:
        lines.append("images")
        for s in facts.images:
            lines.append(f"  {s.name:<12}{s.state:<11}{s.tag}{'  (' + s.detail + ')' if s.detail else ''}")
    host = ", ".join(f"{name} {'yes' if ok else 'no'}" for name, ok in facts.host_programs.items())
    lines.append(f"host programs {host}")
    lines.append("scenario families")
    for status in family_status(facts):
        lines.append(f"  {status.name:<11}{'can run' if status.ok else 'cannot run':<12}{status.describe}")
        for todo in status.todo:
            lines.append(f"  {'':<11}{'':<12}-> {todo}")
        for todo in status.optional_missing:
            lines.append(f"  {'':<11}{'':<12}-> optional, {todo}")
    return lines


def to_json(facts: Facts) -> str:
    data = asdict(facts)
    data["families"] = [asdict(s) for s in family_status(facts)]
    return json.dumps(data, indent=2, default=str)
