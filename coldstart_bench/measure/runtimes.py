"""Container runtimes as a benchmark axis: which the engine offers, how to add one, what it passes.

An injected connection reaches a function only if the runtime carries SCM_RIGHTS fds from a
host Unix socket into the container. runc does. gVisor (runsc) imports only AF_UNIX fds from
host sockets and silently drops a TCP one, so there the manager must relay instead. A runtime
that cannot start a container here (crun on a cgroup v1 hybrid host) is reported with the
engine's error. ``probe_runtime`` finds all this out with one tiny container per runtime.

Self-contained: depends only on the docker SDK (imported lazily), the standard library and the
catalogue's runtime names (standard library only).
Command line (used by .ci/run, no docker SDK needed for the first two)::

    python3 -m coldstart_bench.measure.runtimes daemon-json --merge /etc/docker/daemon.json runsc crun
    python3 -m coldstart_bench.measure.runtimes packages runsc crun
    python3 -m coldstart_bench.measure.runtimes probe runc,runsc,crun
"""

from __future__ import annotations

import argparse
import array
import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..catalogue import DEFAULT_RUNTIME as DEFAULT_RUNTIME
from ..catalogue import RuntimeConfigError as RuntimeConfigError
from ..catalogue import parse_runtimes as parse_runtimes

DAEMON_JSON = "/etc/docker/daemon.json"
RELOAD_HINT = (
    "then reload the engine's configuration: sudo kill -HUP $(pidof dockerd) (running containers are untouched)"
)
PROBE_LABEL = "coldstart-bench.runtime-probe"
PROBE_TIMEOUT_S = 120.0  # a tiny container; generous because a loaded engine (image builds) starts it slowly

# What to register for the runtimes this project knows. runsc: its own sandbox networking
# cannot start in the root network namespace of a VM like this one ("cannot run with network
# enabled in root network namespace"), and without --host-uds=all a container cannot connect
# to a bind-mounted host socket at all.
KNOWN_RUNTIMES: dict[str, dict[str, Any]] = {
    "runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none", "--host-uds=all"]},
    "crun": {"path": "/usr/bin/crun"},
}
# Debian packages providing them (bookworm: runsc 0.0~20221219, crun 1.8.1).
DEBIAN_PACKAGES = {"runsc": "runsc", "crun": "crun"}
# Registered by every engine; never needs configuration.
BUILTIN_RUNTIMES = frozenset({"runc", "io.containerd.runc.v2"})

# Fd hand-off kinds the probe tries.
TCP = "tcp"
UNIX = "unix"

# How a function can get a pooled connection on a runtime.
INJECTED = "injected"  # the pooled TCP fd itself arrives
RELAY = "relay"  # only an AF_UNIX fd arrives: hand over a socketpair end and relay
NOT_POSSIBLE = "not possible"


def scenario_id(scenario: str, runtime: str, default: str = DEFAULT_RUNTIME) -> str:
    """The id of a scenario run on a runtime: unchanged on the default, ``<scenario>@<runtime>`` else."""
    return scenario if runtime == default else f"{scenario}@{runtime}"


def split_scenario_id(sid: str, default: str = DEFAULT_RUNTIME) -> tuple[str, str]:
    """Inverse of ``scenario_id``."""
    scenario, _, runtime = sid.partition("@")
    return scenario, runtime or default


def engine_runtimes(client: Any) -> dict[str, dict[str, Any]]:
    """The runtimes the engine offers (``docker info``), name -> its registration."""
    runtimes = client.info().get("Runtimes") or {}
    return {str(k): dict(v or {}) for k, v in runtimes.items()}


def runtime_snippet(names: Iterable[str]) -> dict[str, Any]:
    """The daemon.json fragment registering ``names``."""
    return {"runtimes": {name: KNOWN_RUNTIMES.get(name, {"path": f"/usr/bin/{name}"}) for name in names}}


def merge_daemon_config(existing: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """``existing`` daemon.json content with ``names`` registered; other keys and runtimes kept.

    A runtime already registered keeps its registration (an operator's choice wins).
    """
    merged = json.loads(json.dumps(existing))  # deep copy, JSON types only
    runtimes = merged.get("runtimes")
    if runtimes is None:
        runtimes = merged["runtimes"] = {}
    elif not isinstance(runtimes, dict):
        raise RuntimeConfigError(f"daemon.json 'runtimes' is {type(runtimes).__name__}, expected an object")
    for name, entry in runtime_snippet(n for n in names if n not in BUILTIN_RUNTIMES)["runtimes"].items():
        runtimes.setdefault(name, entry)
    return merged


def missing_runtime_message(name: str, offered: Iterable[str]) -> str:
    """Why a runtime is skipped and exactly what to configure to get it."""
    snippet = json.dumps(runtime_snippet([name]), indent=2)
    package = DEBIAN_PACKAGES.get(name)
    install = f"install it (Debian: apt-get install {package}), " if package else f"install {name}, "
    offers = ", ".join(sorted(offered)) or "none"
    return (
        f"runtime {name!r} is not registered with the Docker engine (it offers: {offers}); "
        f"{install}merge this into {DAEMON_JSON} (keep the existing keys):\n{snippet}\n{RELOAD_HINT}"
    )


# ---------------------------------------------------------------------------- probe results


@dataclass
class FdCheck:
    """One fd kind: did the reply carry it, and did bytes flow through it both ways."""

    arrived: bool = False
    works: bool = False
    reason: str = ""


@dataclass
class RuntimeProbe:
    """What a runtime does with a container and injected fds, with the reasons."""

    runtime: str
    offered: bool
    runs: bool = False
    tcp_fd: FdCheck = field(default_factory=FdCheck)
    unix_fd: FdCheck = field(default_factory=FdCheck)
    reason: str = ""  # why it does not run (or is not offered); empty when it runs
    registration: dict[str, Any] = field(default_factory=dict)

    @property
    def handoff(self) -> str:
        """The best way to hand a pooled connection to a function on this runtime."""
        if self.runs and self.tcp_fd.works:
            return INJECTED
        if self.runs and self.unix_fd.works:
            return RELAY
        return NOT_POSSIBLE

    @property
    def sandbox_network(self) -> bool:
        """False when the runtime is registered to run every sandbox without a network (runsc --network=none)."""
        return "--network=none" not in (self.registration.get("runtimeArgs") or [])

    def unsupported_reason(self, handoff: str, needs_network: bool = False) -> str | None:
        """None if a scenario can run here, else why not.

        ``handoff``: ``"inject"`` (the pooled TCP fd), ``"relay"`` (an AF_UNIX socketpair end) or
        ``"direct"`` (no fd at all); ``needs_network``: the function itself connects (direct mode,
        fallback) and so needs a network inside the container.
        """
        if not self.offered or not self.runs:
            return f"runtime {self.runtime}: {self.reason}"
        if (needs_network or handoff == "direct") and not self.sandbox_network:
            return f"runtime {self.runtime} is registered with --network=none: its containers have no network"
        if handoff == "direct":
            return None
        check, what = (self.unix_fd, "an AF_UNIX fd") if handoff == RELAY else (self.tcp_fd, "an injected TCP fd")
        if check.works:
            return None
        return f"runtime {self.runtime} does not deliver {what} over a host Unix socket: {check.reason}"

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["handoff"] = self.handoff
        return out


def not_offered(name: str, offered: Iterable[str]) -> RuntimeProbe:
    return RuntimeProbe(runtime=name, offered=False, reason=missing_runtime_message(name, offered))


# ---------------------------------------------------------------------------- the probe

# Runs in the container (python3 -c): for each kind, ask the host fd server for an fd,
# then say "ping" through it and expect "pong". Prints one JSON line.
_CONTAINER_SCRIPT = r"""
import array, json, socket, sys
out = {}
for kind in sys.argv[1:]:
    res = {"arrived": False, "works": False, "reason": ""}
    out[kind] = res
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect("/probe/fd.sock")
        s.sendall(kind.encode() + b"\n")
        msg, anc, _f, _a = s.recvmsg(256, socket.CMSG_SPACE(16))
        fds = []
        for level, typ, data in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                fds += list(array.array("i", data[: len(data) - len(data) % 4]))
        if not msg:
            res["reason"] = "the fd server closed without a reply"
            continue
        if not fds:
            res["reason"] = "the reply arrived without its fd (dropped on the way in)"
            continue
        res["arrived"] = True
        conn = socket.socket(fileno=fds[0])
        conn.settimeout(10)
        conn.sendall(b"ping\n")
        got = b""
        while not got.endswith(b"\n"):
            chunk = conn.recv(64)
            if not chunk:
                break
            got += chunk
        res["works"] = got == b"pong\n"
        if not res["works"]:
            res["reason"] = "the fd arrived but did not carry bytes: got %r" % got
    except Exception as exc:
        res["reason"] = "%s: %s" % (type(exc).__name__, exc)
print(json.dumps(out))
"""


class _FdServer:
    """Host side of the probe: on a Unix socket, answer ``tcp``/``unix`` with a connected fd.

    The far end of each handed fd answers "ping" with "pong", so the probe proves the fd carries
    bytes, not merely that a number arrived.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / "fd.sock"
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        os.chmod(self.path, 0o777)  # the container may run under another uid
        self.listener.listen(4)
        self.listener.settimeout(0.2)
        self.served: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._serve, name="runtime-probe-fd-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._handle, args=(client,), daemon=True)
            t.start()
            self._threads.append(t)

    def _handle(self, client: socket.socket) -> None:
        with contextlib.ExitStack() as stack:
            stack.enter_context(client)
            client.settimeout(10)
            kind = client.recv(64).strip().decode(errors="replace")
            if kind == TCP:
                listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
                handed = stack.enter_context(socket.create_connection(listener.getsockname(), timeout=5))
                far, _ = listener.accept()
            elif kind == UNIX:
                handed, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                stack.enter_context(handed)
            else:
                client.sendall(b"unknown kind\n")
                return
            stack.enter_context(far)
            far.settimeout(20)
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [handed.fileno()]).tobytes())]
            client.sendmsg([b"ok\n"], anc)
            self.served.append(kind)
            handed.close()  # the container holds it now (or it was dropped)
            with contextlib.suppress(OSError):
                got = b""
                while not got.endswith(b"\n") and len(got) < 64:
                    chunk = far.recv(64)
                    if not chunk:
                        return
                    got += chunk
                if got == b"ping\n":
                    far.sendall(b"pong\n")
                    far.recv(1)  # until the container closes its end

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self._thread.join(5)
        for t in self._threads:
            t.join(5)


@contextlib.contextmanager
def _probe_dir() -> Iterator[Path]:
    # Short path (sun_path is 108 bytes), world-traversable so a non-root container user can reach it.
    d = Path(tempfile.mkdtemp(prefix="csb-rtprobe-", dir="/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return text.strip()


def probe_runtime(
    client: Any,
    runtime: str,
    image: str,
    offered: Mapping[str, Any] | None = None,
    timeout: float = PROBE_TIMEOUT_S,
    labels: Mapping[str, str] | None = None,
) -> RuntimeProbe:
    """Run one tiny container on ``runtime`` (no network, the fd server's directory bind-mounted)
    and find out whether it runs and whether a TCP and an AF_UNIX fd arrive and carry bytes.

    ``image`` needs python3 (the project's base image does). Never raises for a runtime that
    fails: the failure is the result.
    """
    import docker.errors  # lazy: the command line's config helpers work without the SDK

    offered = engine_runtimes(client) if offered is None else offered
    if runtime not in offered:
        return not_offered(runtime, offered)
    result = RuntimeProbe(runtime=runtime, offered=True, registration=dict(offered[runtime] or {}))
    all_labels = {PROBE_LABEL: runtime, **(labels or {})}
    with _probe_dir() as directory:
        server = _FdServer(directory)
        container = None
        try:
            container = client.containers.create(
                image,
                ["python3", "-c", _CONTAINER_SCRIPT, TCP, UNIX],
                runtime=runtime,
                network_mode="none",
                volumes={str(directory): {"bind": "/probe", "mode": "rw"}},
                labels=all_labels,
                name=f"csb-rtprobe-{runtime.replace('.', '-')}-{uuid.uuid4().hex[:8]}",
            )
            container.start()
            status = container.wait(timeout=timeout)
            logs = container.logs(stdout=True, stderr=True).decode(errors="replace")
        except docker.errors.APIError as exc:
            result.reason = _first_line(str(getattr(exc, "explanation", None) or exc))
            return result
        except Exception as exc:  # the engine timed out waiting, or the connection broke
            result.reason = f"{type(exc).__name__}: {_first_line(str(exc))}"
            return result
        finally:
            if container is not None:
                with contextlib.suppress(docker.errors.APIError):
                    container.remove(force=True)
            server.close()
    code = status.get("StatusCode")
    report = None
    for line in reversed(logs.splitlines()):
        with contextlib.suppress(ValueError):
            report = json.loads(line)
            break
    if code != 0 or not isinstance(report, dict):
        result.reason = f"the probe container exited with {code}: {_first_line(logs[-2000:]) or 'no output'}"
        return result
    result.runs = True
    for kind, attr in ((TCP, "tcp_fd"), (UNIX, "unix_fd")):
        entry = report.get(kind) or {}
        setattr(
            result,
            attr,
            FdCheck(
                arrived=bool(entry.get("arrived")), works=bool(entry.get("works")), reason=str(entry.get("reason", ""))
            ),
        )
    return result


def probe_runtimes(
    client: Any, names: Sequence[str], image: str, timeout: float = PROBE_TIMEOUT_S
) -> dict[str, RuntimeProbe]:
    """Probe every runtime in ``names`` (missing ones are reported with the configuration to add)."""
    offered = engine_runtimes(client)
    return {name: probe_runtime(client, name, image, offered=offered, timeout=timeout) for name in names}


def default_probe_image(client: Any) -> str:
    """The project's base image (built or found by coldstart_bench.measure.images); it has python3."""
    from coldstart_bench.measure.images import ensure_images

    return ensure_images(client, [], log=lambda _m: None).base


# ---------------------------------------------------------------------------- command line


def _cmd_daemon_json(args: argparse.Namespace) -> int:
    existing: dict[str, Any] = {}
    if args.merge:
        path = Path(args.merge)
        if path.exists() and path.read_text().strip():
            existing = json.loads(path.read_text())
            if not isinstance(existing, dict):
                raise RuntimeConfigError(f"{path}: not a JSON object")
    sys.stdout.write(json.dumps(merge_daemon_config(existing, args.runtimes), indent=2) + "\n")
    return 0


def _cmd_packages(args: argparse.Namespace) -> int:
    print(" ".join(DEBIAN_PACKAGES[r] for r in args.runtimes if r in DEBIAN_PACKAGES))
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from coldstart_bench.measure.engine import connect

    client = connect()
    image = args.image or default_probe_image(client)
    probes = probe_runtimes(client, parse_runtimes(args.runtimes), image)
    sys.stdout.write(json.dumps({n: p.as_dict() for n, p in probes.items()}, indent=2) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m coldstart_bench.measure.runtimes", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("daemon-json", help="print daemon.json with the runtimes registered")
    p.add_argument("--merge", metavar="PATH", help="existing daemon.json to merge into (kept otherwise)")
    p.add_argument("runtimes", nargs="+")
    p.set_defaults(func=_cmd_daemon_json)
    p = sub.add_parser("packages", help="print the Debian packages providing the runtimes")
    p.add_argument("runtimes", nargs="+")
    p.set_defaults(func=_cmd_packages)
    p = sub.add_parser("probe", help="probe runtimes on the engine and print the results as JSON")
    p.add_argument("runtimes", help="comma-separated, e.g. runc,runsc,crun")
    p.add_argument("--image", help="image with python3 (default: the project's base image)")
    p.set_defaults(func=_cmd_probe)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (RuntimeConfigError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
