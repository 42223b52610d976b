"""Scenario files: a user's own function and backend as benchmark scenarios (TOML).

``load_scenario_file(path)`` parses and validates one file into ``UserScenario`` values; every
error names the file, the key and what is allowed. The format is specified in
examples/redis/README.md; examples/redis/scenarios.toml is a complete example.
"""

from __future__ import annotations

import re
import string
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .catalogue import (
    CONNECT_SPEEDUP,
    DEFAULT_RUNTIME,
    LIFECYCLE_SAVING,
    Catalogue,
    Finding,
    Reference,
    Scenario,
)

FORMAT_VERSION = 1
CONNECTIONS = ("direct", "injected", "fd3")
NETWORKS = ("bridge", "none")
SUCCESS = ("json-record", "exit-status")
PLACEHOLDERS = ("target", "socket", "pool")
ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
RUNTIME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
DEFAULT_READY_TIMEOUT_S = 30.0
# Scenario.backend of a user scenario: this prefix plus the backend's name in the file.
USER_BACKEND_PREFIX = "user:"

_SCENARIO_KEYS = {"image", "build", "command", "connection", "backend", "network", "runtime", "success", "timing_line"}
_BACKEND_KEYS = {"image", "build", "port", "address", "ready_log", "ready_tcp", "ready_timeout_s", "command"}


class ScenarioFileError(ValueError):
    """A scenario file is unreadable or invalid; the message says where and why."""


@dataclass(frozen=True)
class ImageSource:
    """Exactly one of: a local image reference, or a build directory (Dockerfile inside)."""

    image: str = ""
    build: Path | None = None

    @property
    def image_name(self) -> str:
        """The name a build directory's image gets (``coldstart-bench/<name>:<hash>``): the
        directory and its parent, e.g. examples/redis/function -> redis-function."""
        if self.build is None:
            return ""
        return f"{self.build.parent.name}-{self.build.name}".lower()


@dataclass(frozen=True)
class UserBackend:
    name: str
    source: ImageSource | None  # None: the user's own server at ``address``
    port: int | None = None
    address: str = ""  # host:port of an existing server
    command: tuple[str, ...] = ()  # overrides the image's CMD
    ready_log: str = ""  # regex a log line must match
    ready_tcp: bool = False  # or: the port accepts a TCP connection
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S

    @property
    def external(self) -> bool:
        return self.source is None


@dataclass(frozen=True)
class UserScenario:
    id: str
    function: ImageSource
    command: tuple[str, ...]  # may hold {target}, {socket}, {pool}
    connection: str  # direct | injected | fd3
    backend: UserBackend
    network: str = "bridge"  # bridge: the run's network | none: no network at all
    runtime: str = ""  # OCI runtime (engine default when empty)
    success: str = "json-record"  # or exit-status (with timing_line)
    timing_line: str = ""  # regex with a named group connect_us (exit-status only)
    source_file: Path | None = None

    def render_command(self, target: str, socket_path: str, pool: str) -> list[str]:
        values = {"target": target, "socket": socket_path, "pool": pool}
        return [part.format_map(values) for part in self.command]


def _fail(path: Path, where: str, message: str) -> ScenarioFileError:
    return ScenarioFileError(f"{path}: {where}: {message}")


def _str(path: Path, where: str, table: dict[str, Any], key: str, default: str = "") -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise _fail(path, f"{where}.{key}", f"must be a string (got {type(value).__name__})")
    return value


def _choice(path: Path, where: str, table: dict[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = _str(path, where, table, key, default)
    if value not in allowed:
        raise _fail(path, f"{where}.{key}", f"must be one of {', '.join(allowed)} (got {value!r})")
    return value


def _unknown_keys(path: Path, where: str, table: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise _fail(path, where, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _source(path: Path, where: str, table: dict[str, Any], required: bool) -> ImageSource | None:
    image, build = _str(path, where, table, "image"), _str(path, where, table, "build")
    if image and build:
        raise _fail(path, where, "give either image or build, not both")
    if build:
        directory = (path.parent / build).resolve()
        if not (directory / "Dockerfile").is_file():
            raise _fail(path, f"{where}.build", f"{directory} has no Dockerfile")
        return ImageSource(build=directory)
    if image:
        return ImageSource(image=image)
    if required:
        raise _fail(path, where, "needs image (a local image) or build (a directory with a Dockerfile)")
    return None


def _command(path: Path, where: str, table: dict[str, Any], required: bool) -> tuple[str, ...]:
    value = table.get("command", [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(path, f"{where}.command", "must be a list of strings (argv)")
    if required and not value:
        raise _fail(path, f"{where}.command", "must not be empty")
    for part in value:
        try:
            names = {name for _lit, name, _spec, _conv in string.Formatter().parse(part) if name is not None}
        except ValueError as exc:
            raise _fail(path, f"{where}.command", f"{part!r}: {exc} (write {{{{ }}}} for a literal brace)") from None
        bad = sorted(names - set(PLACEHOLDERS))
        if bad:
            allowed = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise _fail(path, f"{where}.command", f"unknown placeholder(s) {bad} in {part!r}; allowed: {allowed}")
    return tuple(value)


def _hostport(path: Path, where: str, value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _fail(path, where, f"must be host:port (got {value!r})")
    return value


def _backend(path: Path, name: str, table: Any) -> UserBackend:
    where = f"backends.{name}"
    if not isinstance(table, dict):
        raise _fail(path, where, "must be a table")
    _unknown_keys(path, where, table, _BACKEND_KEYS)
    source = _source(path, where, table, required=False)
    address = _str(path, where, table, "address")
    if address and source is not None:
        raise _fail(path, where, "give either address (your own server) or image/build (the harness starts it)")
    if not address and source is None:
        raise _fail(path, where, "needs address (host:port of your server) or image/build with port")
    if address:
        extra = sorted({"port", "ready_log", "ready_tcp", "command"} & set(table))
        if extra:
            raise _fail(path, where, f"{', '.join(extra)} apply only to a backend the harness starts")
        return UserBackend(name, None, address=_hostport(path, f"{where}.address", address))
    port = table.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise _fail(path, f"{where}.port", f"must be a TCP port number (got {port!r})")
    ready_log = _str(path, where, table, "ready_log")
    if ready_log:
        try:
            re.compile(ready_log)
        except re.error as exc:
            raise _fail(path, f"{where}.ready_log", f"not a regular expression: {exc}") from None
    ready_tcp = table.get("ready_tcp", False)
    if not isinstance(ready_tcp, bool):
        raise _fail(path, f"{where}.ready_tcp", "must be true or false")
    if not ready_log and not ready_tcp:
        raise _fail(path, where, "needs a readiness check: ready_log (regex of a log line) or ready_tcp = true")
    timeout = table.get("ready_timeout_s", DEFAULT_READY_TIMEOUT_S)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout <= 600:
        raise _fail(path, f"{where}.ready_timeout_s", f"must be a number of seconds in (0, 600] (got {timeout!r})")
    return UserBackend(
        name,
        source,
        port=port,
        command=_command(path, where, table, required=False),
        ready_log=ready_log,
        ready_tcp=ready_tcp,
        ready_timeout_s=float(timeout),
    )


def _scenario(path: Path, sid: str, table: Any, backends: dict[str, UserBackend]) -> UserScenario:
    where = f"scenarios.{sid}"
    if not ID_RE.fullmatch(sid):
        raise _fail(
            path, where, "an id is lower-case letters, digits and '-' (at most 63), starting with a letter/digit"
        )
    if not isinstance(table, dict):
        raise _fail(path, where, "must be a table")
    _unknown_keys(path, where, table, _SCENARIO_KEYS)
    function = _source(path, where, table, required=True)
    assert function is not None
    backend_name = _str(path, where, table, "backend")
    if backend_name not in backends:
        known = ", ".join(sorted(backends)) or "none defined"
        raise _fail(path, f"{where}.backend", f"no backend {backend_name!r} (backends: {known})")
    connection = _choice(path, where, table, "connection", CONNECTIONS, "")
    network = _choice(path, where, table, "network", NETWORKS, "bridge")
    if network == "none" and connection == "direct":
        raise _fail(path, f"{where}.network", "a direct connection needs a network (use bridge, or injected/fd3)")
    runtime = _str(path, where, table, "runtime")
    if runtime and not RUNTIME_RE.fullmatch(runtime):
        raise _fail(path, f"{where}.runtime", f"not a runtime name: {runtime!r}")
    success = _choice(path, where, table, "success", SUCCESS, "json-record")
    timing_line = _str(path, where, table, "timing_line")
    if success == "exit-status":
        if not timing_line:
            raise _fail(path, f"{where}.timing_line", "exit-status needs a timing_line regex with (?P<connect_us>...)")
        try:
            groups = re.compile(timing_line).groupindex
        except re.error as exc:
            raise _fail(path, f"{where}.timing_line", f"not a regular expression: {exc}") from None
        if "connect_us" not in groups:
            raise _fail(
                path, f"{where}.timing_line", "needs a named group connect_us, e.g. connect_us=(?P<connect_us>[0-9.]+)"
            )
    elif timing_line:
        raise _fail(path, f"{where}.timing_line", "applies only to success = 'exit-status'")
    return UserScenario(
        id=sid,
        function=function,
        command=_command(path, where, table, required=True),
        connection=connection,
        backend=backends[backend_name],
        network=network,
        runtime=runtime,
        success=success,
        timing_line=timing_line,
        source_file=path,
    )


def load_scenario_file(path: str | Path) -> list[UserScenario]:
    """The scenarios of a TOML scenario file, validated; ``ScenarioFileError`` says what is wrong."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ScenarioFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioFileError(f"{path}: not valid TOML: {exc}") from None
    _unknown_keys(path, "top level", data, {"format", "backends", "scenarios"})
    version = data.get("format")
    if version != FORMAT_VERSION:
        raise _fail(path, "format", f"must be {FORMAT_VERSION} (got {version!r})")
    raw_backends = data.get("backends", {})
    raw_scenarios = data.get("scenarios", {})
    if not isinstance(raw_backends, dict) or not isinstance(raw_scenarios, dict):
        raise _fail(path, "top level", "backends and scenarios must be tables ([backends.NAME], [scenarios.ID])")
    if not raw_scenarios:
        raise _fail(path, "scenarios", "no scenario defined ([scenarios.ID])")
    backends = {name: _backend(path, name, table) for name, table in raw_backends.items()}
    return [_scenario(path, sid, table, backends) for sid, table in raw_scenarios.items()]


# --- into the catalogue ----------------------------------------------------------------------------
USER_FAMILY = "user"
_HANDOVER = {"injected": "Injecting", "fd3": "Handing over on fd 3"}


def as_catalogue_scenario(user: UserScenario, direct_ids: Sequence[str] = ()) -> Scenario:
    """The catalogue entry of a user scenario: an injected or fd-3 scenario is compared with the
    file's direct scenarios on the same backend (a headline, with its findings), like socket/direct."""
    references: tuple[Reference, ...] = ()
    if user.connection != "direct":
        subject = f"{_HANDOVER[user.connection]} a {user.backend.name} connection" + (
            " without container networking" if user.network == "none" else ""
        )
        references = tuple(
            Reference(
                direct,
                headline=True,
                findings=(
                    Finding(CONNECT_SPEEDUP, user.backend.name),
                    Finding(LIFECYCLE_SAVING, user.backend.name, subject),
                ),
            )
            for direct in direct_ids
        )
    return Scenario(
        user.id,
        "direct" if user.connection == "direct" else "socket",
        network=user.network,
        backend=f"{USER_BACKEND_PREFIX}{user.backend.name}",
        expect_path="fd3" if user.connection == "fd3" else "",
        family=USER_FAMILY,
        runtime=user.runtime or DEFAULT_RUNTIME,
        entrypoint="fd3" if user.connection == "fd3" else "in-process",
        references=references,
        description=f"from {user.source_file}" if user.source_file else "from a scenario file",
    )


def register_user_scenarios(catalogue: Catalogue, scenarios: Sequence[UserScenario]) -> list[Scenario]:
    """Add a file's scenarios to the run's catalogue; an id the catalogue already has (a built-in
    one, or one of another file) is a ScenarioFileError naming the file and the id."""
    added: list[Scenario] = []
    # By id, not file order: `coldstart-bench report` rebuilds them in that order from the run's
    # metadata, and findings follow catalogue order, so the re-rendered report matches.
    for user in sorted(scenarios, key=lambda u: u.id):
        same_backend = [u for u in scenarios if u.backend.name == user.backend.name and u is not user]
        direct = [u.id for u in same_backend if u.connection == "direct"]
        scenario = as_catalogue_scenario(user, direct)
        if scenario.id in catalogue or catalogue.knows(scenario.id):
            where = user.source_file or "scenario file"
            raise ScenarioFileError(
                f"{where}: scenarios.{user.id}: id {scenario.id!r} is already a scenario of the catalogue; "
                "choose another"
            )
        added.append(catalogue.register(scenario))
    return added


def user_scenario_ids(scenarios: Sequence[UserScenario]) -> dict[str, UserScenario]:
    """Catalogue id -> user scenario (the id carries @runtime when a runtime is set)."""
    return {as_catalogue_scenario(u).id: u for u in scenarios}
