"""Configuration of the Connection Pool Manager: command line, optional JSON file, validation.

A JSON config file (``--config FILE``) looks like::

    {
      "socket": "/run/cpm/pool.sock",
      "socket_mode": "0660",
      "allow_uids": [0, 1000],
      "allow_gids": [],
      "pools": {
        "echo": {"target": "echo:7000", "size": 100, "exhaustion": "connect"},
        "pg":   {"kind": "postgres", "target": "db:5432", "size": 20, "user": "bench", ...}
      }
    }

Command-line flags override the file; ``--target`` defines (or overrides) the pool
named by ``--pool`` (default ``echo``). Unknown keys of a pool are kept in
``PoolConfig.options`` and passed whole to plug-in kinds (``open_session``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any

EXHAUSTION_POLICIES = ("wait", "connect", "refuse")
# How a pooled connection reaches its caller: the fd itself (SCM_RIGHTS), or one end of an AF_UNIX
# socketpair whose other end the manager relays to the connection (for runtimes such as gVisor that
# import only AF_UNIX fds). An acquire may ask for either with its own "handoff" field.
HANDOFFS = ("inject", "relay")
# Kinds that terminate TLS choose among more paths (components/tls_pool.py): kernel TLS on the fd, the
# record layer in the caller (the keys go with the fd), the relay (the keys stay), or auto.
TLS_HANDOFFS = ("ktls", "record", "auto")
# Descriptors one live relay holds in the manager: its socketpair end, the pooled connection, two pipes.
FDS_PER_RELAY = 6
# Plug-in pool kinds: kind -> module providing open_session()/check_session().
KIND_MODULES = {"postgres": "components.pg_pool", "tls": "components.tls_pool"}
# Callers whose credentials are refused, kept until their error line is sent; more are answered at
# once. They never count against max_clients, so they cannot starve allowed callers.
DENIED_SLOTS = 16
# Descriptors all callers together may park on request lines still arriving (SCM_RIGHTS before the
# newline): a caller beyond it gets an error. Counted in the fd budget.
MAX_PARKED_FDS = 256
# The kernel's bounds (include/net/tcp.h: MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT;
# TCP_USER_TIMEOUT takes a non-negative int of ms): outside them setsockopt says EINVAL.
INT_RANGES: dict[str, tuple[int, int]] = {
    "size": (1, 10_000_000),
    "min_idle": (-1, 10_000_000),
    "max_connecting": (1, 10_000),
    "keepalive_idle": (1, 32767),
    "keepalive_interval": (1, 32767),
    "keepalive_count": (1, 127),
    "user_timeout_ms": (0, 2**31 - 1),
}
# Durations and other numbers: finite and at most this (a year of seconds; ms fields say so).
MAX_SECONDS = 365 * 86400.0
FLOAT_RANGES: dict[str, tuple[float, float]] = {"settle_ms": (0.0, 60_000.0), "ttl_jitter": (0.0, 0.999999)}


class ConfigError(ValueError):
    """A configuration that cannot work; the message says what to change."""


@dataclass
class PoolConfig:
    name: str
    target: str = ""
    kind: str = "tcp"
    module: str = ""  # plug-in module for kind != tcp (defaults from KIND_MODULES)
    size: int = 10  # idle connections the background refill keeps ready
    min_idle: int = -1  # floor kept when the pool is unused for max_idle; -1 means size
    ttl: float = 0.0  # max age in seconds, 0 = unlimited
    ttl_jitter: float = 0.1  # fraction of ttl subtracted at random so expiries spread out
    max_idle: float = 0.0  # seconds; idle connections beyond min_idle are closed after this
    exhaustion: str = "connect"
    borrow_timeout: float = 1.0
    connect_timeout: float = 2.0
    max_connecting: int = 32  # bound on concurrent connects (and plug-in session opens)
    backoff_initial: float = 0.05
    backoff_max: float = 2.0
    keepalive_idle: int = 30
    keepalive_interval: int = 10
    keepalive_count: int = 3
    user_timeout_ms: int = 30_000
    nodelay: bool = True
    accept_release: bool = True
    resolve_ttl: float = 5.0
    # A fresh connection waits this long before its first health check and hand-out, so a backend
    # that closes (or greets) right after accepting is seen before a caller gets the connection.
    settle_ms: float = 20.0
    handoff: str = "inject"  # one of HANDOFFS: what a plain acquire of this pool gets
    # Backend connections this pool may hold at once, handed out (still open) plus idle, settling
    # and being opened; 0 = no cap. Keep it below the server's limit (PostgreSQL: max_connections
    # minus superuser_reserved_connections and whatever else connects directly).
    max_backend: int = 0
    # Seconds to wait before opening sessions again after the backend refused a login (wrong
    # password, unknown role): PgBouncer's server_login_retry, instead of the connect backoff.
    login_retry: float = 15.0
    # Seconds the last good addresses of the target are kept through a resolver outage.
    resolve_keep: float = 300.0
    options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        _check_types(f"pool {self.name!r}", self, _POOL_TYPES)
        if self.kind == "tcp":
            if not self.target:
                raise ConfigError(f"pool {self.name!r}: target HOST:PORT is required")
            from components.protocol import split_hostport

            try:
                split_hostport(self.target)
            except ValueError as exc:
                raise ConfigError(f"pool {self.name!r}: {exc}") from None
        elif not (self.module or KIND_MODULES.get(self.kind)):
            raise ConfigError(f"pool {self.name!r}: unknown kind {self.kind!r} and no 'module' given")
        for key, (low, high) in INT_RANGES.items():
            value = getattr(self, key)
            if not low <= value <= high:
                raise ConfigError(f"pool {self.name!r}: {key} must be in [{low}, {high}], got {value}")
        for key, want in _POOL_TYPES.items():
            if want is float:
                low_f, high_f = FLOAT_RANGES.get(key, (0.0, MAX_SECONDS))
                value = getattr(self, key)
                if not (math.isfinite(value) and low_f <= value <= high_f):
                    raise ConfigError(
                        f"pool {self.name!r}: {key} must be a finite number in [{low_f:g}, {high_f:g}], got {value}"
                    )
        if self.min_idle < 0 or self.min_idle > self.size:
            self.min_idle = self.size
        if self.exhaustion not in EXHAUSTION_POLICIES:
            raise ConfigError(f"pool {self.name!r}: exhaustion must be one of {', '.join(EXHAUSTION_POLICIES)}")
        if self.max_connecting < 1:
            raise ConfigError(f"pool {self.name!r}: max_connecting must be >= 1")
        if self.max_backend < 0:
            raise ConfigError(f"pool {self.name!r}: max_backend must be >= 0 (0 = no cap)")
        if 0 < self.max_backend < self.size:
            raise ConfigError(f"pool {self.name!r}: max_backend {self.max_backend} is below size {self.size}")
        _check_pool_name(self.name)
        allowed = HANDOFFS + TLS_HANDOFFS if self.kind != "tcp" else HANDOFFS
        if self.handoff not in allowed:
            raise ConfigError(f"pool {self.name!r}: handoff must be one of {', '.join(allowed)}, got {self.handoff!r}")
        for attr in (
            "ttl",
            "max_idle",
            "borrow_timeout",
            "connect_timeout",
            "backoff_initial",
            "backoff_max",
            "settle_ms",
            "resolve_ttl",
            "login_retry",
            "resolve_keep",
        ):
            if getattr(self, attr) < 0:
                raise ConfigError(f"pool {self.name!r}: {attr} must be >= 0")
        if not 0 <= self.ttl_jitter < 1:
            raise ConfigError(f"pool {self.name!r}: ttl_jitter must be in [0, 1)")

    @property
    def plugin_module(self) -> str:
        return self.module or KIND_MODULES.get(self.kind, "")

    def as_dict(self) -> dict[str, Any]:
        """The settings as logged: secrets among the plug-in options are redacted.

        Only for text that leaves the process (logs, stats, replies); sessions are opened with
        ``session_dict()``."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "options"}
        out.update({k: ("***" if _is_secret(k) else v) for k, v in self.options.items()})
        return out

    def session_dict(self) -> dict[str, Any]:
        """The settings a plug-in opens sessions with: the real secrets, never written anywhere."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "options"}
        out.update(self.options)
        return out


def _check_pool_name(name: str) -> None:
    """A pool a request cannot name is a configuration error, not a pool nobody can reach."""
    from components.protocol import MAX_REQUEST_BYTES, PROTOCOL_VERSION

    # The longest plain request naming it, readable by any client's encoder, plus room for the
    # fields an acquire or a report adds ("handoff", "event").
    line = json.dumps({"v": PROTOCOL_VERSION, "op": "acquire", "pool": name}) + "\n"
    if len(line.encode()) + 64 > MAX_REQUEST_BYTES:
        raise ConfigError(
            f"pool name is {len(name.encode())} bytes: too long for a request line "
            f"(requests are capped at {MAX_REQUEST_BYTES} bytes); use a shorter name"
        )


_SECRET_WORDS = ("password", "secret", "token", "credential")


def _is_secret(key: str) -> bool:
    # password_file / password_env name where a secret is, not the secret itself
    if key.endswith(("_file", "_env")):
        return False
    return any(word in key.lower() for word in _SECRET_WORDS)


_POOL_FIELDS = {f.name for f in fields(PoolConfig)} - {"name", "options"}
_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
_POOL_TYPES: dict[str, type] = {
    f.name: {"int": int, "float": float, "bool": bool, "str": str}[str(f.type)]
    for f in fields(PoolConfig)
    if f.name in _POOL_FIELDS
}


def _type_ok(value: Any, want: type) -> bool:
    if want is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False  # JSON true is not a count or a duration
    if want is float:
        return isinstance(value, (int, float))
    return isinstance(value, want)


def _check_types(where: str, obj: Any, types: dict[str, type]) -> None:
    for key, want in types.items():
        value = getattr(obj, key)
        if not _type_ok(value, want):
            raise ConfigError(f"{where}: {key!r} must be {_TYPE_NAMES[want]}, got {value!r}")
        if want is float:
            setattr(obj, key, _as_float(f"{where}: {key!r}", value))


def _as_float(what: str, value: Any) -> float:
    try:
        return float(value)
    except OverflowError:
        raise ConfigError(f"{what} must be a finite number, got an integer of {len(str(value))} digits") from None


def pool_from_dict(name: str, data: Any) -> PoolConfig:
    if not isinstance(data, dict):
        raise ConfigError(
            f'pools.{name}: must be an object of settings such as {{"target": "HOST:PORT"}}, got {data!r}'
        )
    known = {k: v for k, v in data.items() if k in _POOL_FIELDS}
    extra = {k: v for k, v in data.items() if k not in _POOL_FIELDS}
    try:
        cfg = PoolConfig(name=name, options=extra, **known)
    except TypeError as exc:
        raise ConfigError(f"pool {name!r}: {exc}") from None
    return cfg


@dataclass
class ManagerConfig:
    socket: str
    pools: dict[str, PoolConfig]
    socket_mode: int = 0o660
    socket_dir_mode: int | None = None  # applied to the socket directory when given (or created)
    allow_uids: set[int] = field(default_factory=set)
    allow_gids: set[int] = field(default_factory=set)
    request_timeout: float = 2.0  # a client must send its whole request line within this
    max_clients: int = 1024
    health_interval: float = 1.0  # idle sweep: TTL, max idle, peer closed
    log_grants: str = "each"  # each | none (denials are always logged)
    connector_process: bool = False  # open TCP connections in a forked helper (components.pool_connector)
    default_pool: str = "echo"
    max_relays: int = 64  # relayed connections live at once; an acquire beyond gets pool_exhausted
    relay_idle_timeout: float = 300.0  # seconds without a byte either way before a relay is ended
    relay_buffer_bytes: int = 64 * 1024  # bytes in flight per relay direction (pipe or buffer size)
    # After a hand-out, top the pool up this much later (0: at once, the default): the caller woken by
    # the reply may then run before the manager's connect work on the same CPU. Measured on a loaded
    # 2-CPU host it made no difference to the caller's reply wait (docs/connect-breakdown.md): off.
    refill_defer_ms: float = 0.0
    # Callers of one uid still sending their request line (connected, line incomplete), at most; a
    # caller beyond it is answered ``busy`` at once, so one uid's slow or silent connections cannot
    # take every max_clients slot. 0: a quarter of max_clients, at least 16.
    max_pending_per_uid: int = 0

    @property
    def pending_per_uid(self) -> int:
        return self.max_pending_per_uid or max(16, self.max_clients // 4)

    def validate(self) -> None:
        if not self.socket:
            raise ConfigError("--socket PATH is required")
        if len(os.fsencode(self.socket)) >= 108:
            raise ConfigError(f"socket path is {len(os.fsencode(self.socket))} bytes; Unix sockets allow < 108")
        if not self.pools:
            raise ConfigError("no pools configured: give --target HOST:PORT or --config FILE")
        for pool in self.pools.values():
            pool.validate()
        if self.default_pool not in self.pools:
            self.default_pool = next(iter(self.pools))
        if self.log_grants not in ("each", "none"):
            raise ConfigError("log_grants must be 'each' or 'none'")
        for key, minimum, maximum in (
            ("max_clients", 1, 1_000_000),
            ("max_relays", 0, 100_000),
            ("relay_buffer_bytes", 4096, 64 << 20),
            ("max_pending_per_uid", 0, 1_000_000),
        ):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
                raise ConfigError(f"{key} must be an integer in [{minimum}, {maximum}], got {value!r}")
        for key in ("request_timeout", "health_interval", "relay_idle_timeout"):
            value = getattr(self, key)
            if not _type_ok(value, float) or not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
                raise ConfigError(f"{key} must be a finite number of seconds in (0, {MAX_SECONDS:g}], got {value!r}")
        if not _type_ok(self.refill_defer_ms, float) or not 0 <= self.refill_defer_ms <= 1000:
            raise ConfigError(f"refill_defer_ms must be a number of ms in [0, 1000], got {self.refill_defer_ms!r}")
        for key in ("socket_mode", "socket_dir_mode"):
            mode = getattr(self, key)
            if mode is not None and not 0 <= mode <= 0o777:
                raise ConfigError(f"{key} must be an octal permission mode 0000-0777 such as 0660, got {oct(mode)}")

    def fd_budget(self) -> int:
        """Descriptors the configuration can hold at once (pools, connects, clients, relays, margin)."""
        pools = sum(2 * p.size + p.max_connecting for p in self.pools.values())
        # A relay keeps its pooled connection (counted here, not in the pool) plus 5 more; the hub
        # itself holds an epoll fd and a wake-up pipe.
        relays = FDS_PER_RELAY * self.max_relays + 3 if self.max_relays else 0
        return pools + self.max_clients + DENIED_SLOTS + MAX_PARKED_FDS + relays + 64


def _octal(key: str, value: Any) -> int:
    """A permission mode: an octal string ("0660") or, in JSON, an integer (432 == 0o660)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value, 8)
        except ValueError:
            pass
    raise ConfigError(f"{key} must be an octal permission mode such as 0660, got {value!r}")


def _id_list(key: str, value: Any) -> set[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"{key} must be a list of integer ids such as [0, 1000], got {value!r}")
    return set(value)


def _number(key: str, value: Any) -> float:
    if not _type_ok(value, float):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    return _as_float(key, value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m components.pool_manager",
        description="Connection Pool Manager: hands pre-opened backend connections to callers "
        "over a Unix socket (pool protocol v1, fds passed with SCM_RIGHTS).",
    )
    p.add_argument("--config", help="JSON file with manager settings and named pools")
    p.add_argument("--socket", help="Unix socket path to listen on")
    p.add_argument("--target", help="HOST:PORT of the backend of pool --pool (resolved at connect time)")
    p.add_argument("--pool", default=None, help="name of the pool --target defines (default: echo)")
    p.add_argument("--size", type=int, help="idle connections kept ready (default 10)")
    p.add_argument("--min-idle", type=int, help="floor kept when unused for --max-idle (default: size)")
    p.add_argument("--exhaustion", choices=EXHAUSTION_POLICIES, help="when empty: wait, connect on demand, refuse")
    p.add_argument("--borrow-timeout", type=float, help="seconds a caller may wait for a connection")
    p.add_argument("--connect-timeout", type=float)
    p.add_argument("--max-connecting", type=int, help="bound on concurrent backend connects per pool")
    p.add_argument("--ttl", type=float, help="max connection age in seconds (0 = unlimited)")
    p.add_argument("--ttl-jitter", type=float)
    p.add_argument("--max-idle", type=float, help="seconds an idle connection beyond min-idle is kept")
    p.add_argument("--no-release", action="store_true", help="refuse connections handed back (op release)")
    p.add_argument("--allow-uid", type=int, action="append", help="allowed peer uid (repeatable)")
    p.add_argument("--allow-gid", type=int, action="append", help="allowed peer gid (repeatable)")
    p.add_argument("--socket-mode", help="octal mode of the socket file (default 0660)")
    p.add_argument("--socket-dir-mode", help="octal mode applied to the socket directory")
    p.add_argument("--request-timeout", type=float, help="seconds a client has to send its request")
    p.add_argument("--max-clients", type=int, help="callers served at once (>= 1, default 1024)")
    p.add_argument(
        "--max-pending-per-uid",
        type=int,
        help="callers of one uid still sending their request, at most (default: max-clients/4, >= 16)",
    )
    p.add_argument("--settle-ms", type=float, help="ms a fresh connection settles before hand-out (default 20)")
    p.add_argument("--health-interval", type=float)
    p.add_argument("--log-grants", choices=("each", "none"))
    p.add_argument(
        "--handoff",
        choices=HANDOFFS + TLS_HANDOFFS,
        help="what a plain acquire of pool --pool gets: the fd (inject) or a relay; tls pools also ktls, record, auto",
    )
    p.add_argument("--max-relays", type=int, help="relayed connections live at once (default 64, 0 = no relays)")
    p.add_argument("--relay-idle-timeout", type=float, help="seconds without traffic before a relay ends (300)")
    p.add_argument(
        "--refill-defer-ms", type=float, help="ms after a hand-out before the pool is topped up (default 0: at once)"
    )
    p.add_argument(
        "--connector-process",
        action="store_true",
        help="open TCP connections in a forked helper process and receive them in batches "
        "(takes the handshake work off the hand-out loop)",
    )
    return p


def load_config(argv: list[str] | None = None) -> ManagerConfig:
    args = build_parser().parse_args(argv)
    data: dict[str, Any] = {}
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as fh:
                data = json.load(fh, object_pairs_hook=_unique_keys)
        except ConfigError as exc:
            raise ConfigError(f"config {args.config}: {exc}") from None
        except (OSError, ValueError, RecursionError) as exc:
            raise ConfigError(f"cannot read config {args.config}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config {args.config}: top level must be an object")
    raw_pools = data.get("pools", {})
    if not isinstance(raw_pools, dict):
        raise ConfigError("'pools' must be an object of name -> settings")
    pools = {name: pool_from_dict(name, spec) for name, spec in raw_pools.items()}

    pool_name = args.pool or data.get("default_pool") or "echo"
    overrides = {
        "target": args.target,
        "size": args.size,
        "min_idle": args.min_idle,
        "exhaustion": args.exhaustion,
        "borrow_timeout": args.borrow_timeout,
        "connect_timeout": args.connect_timeout,
        "max_connecting": args.max_connecting,
        "ttl": args.ttl,
        "ttl_jitter": args.ttl_jitter,
        "max_idle": args.max_idle,
        "settle_ms": args.settle_ms,
        "handoff": args.handoff,
        "accept_release": False if args.no_release else None,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides:
        if pool_name in pools:
            for key, value in overrides.items():
                setattr(pools[pool_name], key, value)
        elif "target" in overrides or not pools:
            pools[pool_name] = pool_from_dict(pool_name, overrides)
        else:
            for pool in pools.values():
                for key, value in overrides.items():
                    setattr(pool, key, value)

    me = os.getuid()
    allow_uids = set(args.allow_uid) if args.allow_uid else _id_list("allow_uids", data.get("allow_uids", [me, 0]))
    allow_gids = set(args.allow_gid) if args.allow_gid else _id_list("allow_gids", data.get("allow_gids", []))
    dir_mode = args.socket_dir_mode if args.socket_dir_mode is not None else data.get("socket_dir_mode")
    socket_path = args.socket or data.get("socket", "")
    if not isinstance(socket_path, str):
        raise ConfigError(f"socket must be a path string, got {socket_path!r}")
    connector = data.get("connector_process", False)
    if not isinstance(connector, bool):
        raise ConfigError(f"connector_process must be true or false, got {connector!r}")
    cfg = ManagerConfig(
        socket=socket_path,
        pools=pools,
        socket_mode=_octal("socket_mode", _given(args.socket_mode, data, "socket_mode", "0660")),
        socket_dir_mode=_octal("socket_dir_mode", dir_mode) if dir_mode is not None else None,
        allow_uids=allow_uids,
        allow_gids=allow_gids,
        request_timeout=_number("request_timeout", _given(args.request_timeout, data, "request_timeout", 2.0)),
        max_clients=_given(args.max_clients, data, "max_clients", 1024),
        health_interval=_number("health_interval", _given(args.health_interval, data, "health_interval", 1.0)),
        log_grants=_given(args.log_grants, data, "log_grants", "each"),
        refill_defer_ms=_given(args.refill_defer_ms, data, "refill_defer_ms", 0.0),
        connector_process=bool(args.connector_process or connector),
        default_pool=pool_name,
        max_relays=_given(args.max_relays, data, "max_relays", 64),
        relay_idle_timeout=_number(
            "relay_idle_timeout", _given(args.relay_idle_timeout, data, "relay_idle_timeout", 300.0)
        ),
        relay_buffer_bytes=data.get("relay_buffer_bytes", 64 * 1024),
        max_pending_per_uid=_given(args.max_pending_per_uid, data, "max_pending_per_uid", 0),
    )
    cfg.validate()
    return cfg


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different: a repeated key is a mistake, not an override."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ConfigError(f"duplicate key {key!r}: each setting may appear once per object")
        out[key] = value
    return out


def _given(flag: Any, data: dict[str, Any], key: str, default: Any) -> Any:
    """The flag if given (0 and "" are values, not absence), else the file's key, else the default."""
    if flag is not None:
        return flag
    return data.get(key, default)


def apply_socket_options(sock: Any, cfg: PoolConfig) -> None:
    """Keepalive, TCP_USER_TIMEOUT and TCP_NODELAY, set before the connection exists so every
    hand-out already carries them (the receiving function inherits the options with the fd)."""
    import socket

    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, cfg.keepalive_idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, cfg.keepalive_interval)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, cfg.keepalive_count)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, cfg.user_timeout_ms)
    if cfg.nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
