"""Which image and command run a scenario's function, as data: one row per language (its image, its
program, the options it takes) and one per entrypoint (what wraps the program). The testbed fills
in its own names (target, socket, pool) and builds the FunctionSpec around the command.

A new language is a new row of LANGUAGES (and an image that holds its runtime and the fd-3
entrypoint); a new way of reaching a PostgreSQL backend is a new row of PG_ROUTES.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..catalogue import Scenario
from .pgbouncer import CONTAINER_SOCKET_DIR, PGBOUNCER_PORT

ENTRYPOINT_BIN = "/usr/local/bin/fd3-entrypoint"


@dataclass(frozen=True)
class Language:
    """How a function in one language is run. `images` maps an entrypoint to the image holding the
    runtime (and, for "fd3", the entrypoint); `options` is the template of its command line."""

    program: tuple[str, ...]
    images: Mapping[str, str]
    options: tuple[str, ...]
    release_flag: str = ""  # the option that hands the connection back ("" = not supported)
    in_process_acquire: bool = False  # it can acquire from the pool manager itself (--mode socket)


ECHO_OPTIONS = ("--mode", "{mode}", "--target", "{target}", "--payload-size", "{payload}")

LANGUAGES: dict[str, Language] = {
    "python": Language(
        program=("python3", "-m", "components.function"),
        images={"in-process": "function", "fd3": "function"},
        options=(*ECHO_OPTIONS, "--socket", "{socket}", "--pool", "{pool}"),
        release_flag="--release",
        in_process_acquire=True,
    ),
    "node": Language(
        program=("node", "/app/components/node/function.js"),
        images={"in-process": "nodefunction", "fd3": "nodefunction"},
        options=ECHO_OPTIONS,
    ),
    "c": Language(
        program=("/usr/local/bin/c-function",),
        images={"in-process": "cfunction", "fd3": "cfunction"},
        options=ECHO_OPTIONS,
    ),
}

# What runs before the program, per entrypoint, and the --mode the function is then given for an
# injected (mode "socket") scenario. Every arm starts through the fd-3 entrypoint, acquiring or
# not, so all have the same exec chain and the same clock origin (its first instruction).
ENTRYPOINTS: dict[str, tuple[tuple[str, ...], str]] = {
    "in-process": ((ENTRYPOINT_BIN, "--no-acquire", "--"), "socket"),
    "fd3": ((ENTRYPOINT_BIN, "--socket", "{socket}", "--pool", "{pool}", "--"), "fd3"),
}
STAMP_ONLY: tuple[str, ...] = ENTRYPOINTS["in-process"][0]


class SpecError(ValueError):
    """The scenario asks for a combination no image or function supports."""


def _fill(template: Sequence[str], values: Mapping[str, str]) -> list[str]:
    return [part.format(**values) for part in template]


def image_key(scenario: Scenario) -> str:
    """The image (a name under images/) that runs the scenario's function."""
    language = LANGUAGES.get(scenario.language)
    if language is None:
        raise SpecError(f"{scenario.id}: no function in language {scenario.language!r} (have {', '.join(LANGUAGES)})")
    image = language.images.get(scenario.entrypoint)
    if image is None:
        raise SpecError(f"{scenario.id}: entrypoint {scenario.entrypoint!r} unknown (have {', '.join(ENTRYPOINTS)})")
    return image


def echo_command(scenario: Scenario, *, target: str, socket: str, pool: str, payload_size: int) -> list[str]:
    """The command of an echo-backend function container."""
    image_key(scenario)  # the clear error for an unknown language or entrypoint
    language = LANGUAGES[scenario.language]
    wrapper, injected_mode = ENTRYPOINTS[scenario.entrypoint]
    mode = scenario.mode
    if mode == "socket":
        if injected_mode == "socket" and not language.in_process_acquire:
            raise SpecError(
                f"{scenario.id}: the {scenario.language} function cannot acquire from the pool manager itself; "
                "use entrypoint='fd3'"
            )
        mode = injected_mode
    elif mode != "direct":
        raise SpecError(f"{scenario.id}: mode must be direct or socket, got {scenario.mode!r}")
    values = {"mode": mode, "target": target, "socket": socket, "pool": pool, "payload": str(payload_size)}
    command = _fill(wrapper if scenario.mode == "socket" else STAMP_ONLY, values)
    command += [*language.program, *_fill(language.options, values)]
    if scenario.release:
        if not language.release_flag or mode != "socket":
            raise SpecError(f"{scenario.id}: release needs a function that acquires in-process (python)")
        command.append(language.release_flag)
    return command


@dataclass(frozen=True)
class PgRoute:
    """Where a direct-mode PostgreSQL function connects: host and port (a Unix socket directory for
    host makes libpq-style clients use the socket), and the host directories it must mount."""

    host: str
    port: int
    binds: dict[str, dict[str, str]]


def pg_route(scenario: Scenario, db: Any, pgbouncer: Any = None) -> PgRoute:
    """The database itself, PgBouncer over TCP, or PgBouncer's bind-mounted Unix socket."""
    if not scenario.proxy:
        return PgRoute(db.host, int(db.port), {})
    if pgbouncer is None:
        raise SpecError(f"{scenario.id}: proxy {scenario.proxy!r} needs PgBouncer, which is not running")
    if scenario.proxy == "pgbouncer":
        if scenario.network == "none":
            raise SpecError(f"{scenario.id}: PgBouncer over TCP needs container networking; use pgbouncer-unix")
        return PgRoute(pgbouncer.name, PGBOUNCER_PORT, {})
    if scenario.proxy == "pgbouncer-unix":
        return PgRoute(CONTAINER_SOCKET_DIR, PGBOUNCER_PORT, dict(pgbouncer.socket_mount))
    raise SpecError(f"{scenario.id}: unknown proxy {scenario.proxy!r} (pgbouncer, pgbouncer-unix)")


NOT_INJECTED_PATHS = frozenset({"", "direct", "fallback"})


def injected(record: Mapping[str, Any] | None) -> bool:
    """A cold start whose connection came from the pool manager (path socket, fd3, or another
    hand-over), as the function reports it."""
    return record is not None and str(record.get("path") or "") not in NOT_INJECTED_PATHS
