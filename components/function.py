"""The serverless function: get a backend connection, send one request, verify the echo, report.

Modes:
  direct  resolve the target (resolve_us) and TCP-connect (handshake_us): acquire_us = both.
  socket  acquire a pooled connection from the pool manager over its Unix socket
          (acquire_us = fd_recv_us; its steps protocol.ACQUIRE_PHASES: uds_connect_us,
          request_write_us, reply_recv_us, reply_parse_us, sock_wrap_us), after loading the pool
          client components/pool_acquire.py (library_load_us = protocol_import_us).
  fd3     adopt the connection components/c/fd3_entrypoint.c placed at fd 3 (LISTEN_FDS=1);
          acquire_us = fd_recv_us is the entrypoint's acquire, verify_us adds its fd check to
          this one, session_setup_us is the adoption here. Without it (COLDSTART_FD3_FALLBACK
          says why) the function connects directly, path "fallback".
Phases, named alike in every function of the project: library_load_us (what the connection
needs: the pool client, ssl/libcrypto; nothing for plain direct TCP), acquire_us, verify_us (the
check of the socket: family, type, peer, blocking; fd_check_us), session_setup_us (a TLS
handshake or continuation; 0 for plain TCP), first_request_us. connect_us = acquire_us +
verify_us + session_setup_us (+ socket_attempt_us after a failed injection). Raw CLOCK_REALTIME
stamps: t_entry_ns (the fd-3 entrypoint's first instruction when started through it, else the top
of this module), t_main_ns, t_connected_ns, t_first_reply_ns, t_end_ns.
If socket mode fails (manager unreachable, refusing, exhausted, bad fd, fd dropped on the way)
and fallback is on, the function connects directly and reports path "fallback"; then connect_us
also counts the failed attempt (socket_attempt_us), because that is what the caller waited. A
dropped fd is reported to the manager after the measured work (fd_drop_reported).
Before any of this, the function pages in its own executable mappings and the compiled modules
any of its modes may import for the connection (CONNECT_MODULES; prefetch_us; see
components/prefetch.py), the same for every mode; --no-prefetch turns that off.

Prints exactly one JSON line on stdout; exit status 0 iff ok. Imports are kept minimal
(no argparse) because every run is a cold process and start-up time is part of what is measured.
"""

from __future__ import annotations

import time

T_ENTRY_NS = time.time_ns()  # before any other import: the earliest stamp of this process

import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

USAGE = """usage: python -m components.function --mode {direct,socket,fd3} [--target HOST:PORT]
       [--socket PATH] [--pool NAME] [--payload-size N] [--fallback | --no-fallback]
       [--release] [--timeout S] [--no-prefetch] [--transport {tcp,tls} [--tls-ca FILE]
       [--tls-server-name NAME] [--tls-cert FILE --tls-key FILE]] [--handoff {inject,relay}] [--requests N]

  --mode          direct (resolve + TCP connect), socket (fd from the pool manager)
                  or fd3 (fd inherited from the fd-3 entrypoint)
  --target        backend HOST:PORT (direct mode and fallback)       default echo:7000
  --socket        pool manager Unix socket (socket mode)            default /run/cpm/pool.sock
  --pool          pool name                                         default echo
  --payload-size  request size in bytes (>= 24)                     default 64
  --fallback      connect directly if socket mode fails (default); --no-fallback disables
  --release       hand the connection back to the pool (op release) instead of closing it
  --timeout       seconds for each network step                     default 2.0
  --transport     tcp, or tls: TLS 1.3 handshake (direct) or the injected session continued (socket)
  --tls-ca        CA file verifying the server (direct tls)        default: system CAs
  --tls-server-name  name to verify (direct tls)                    default: the target host
  --tls-cert, --tls-key  client certificate for mutual TLS (direct tls)
  --no-prefetch   skip paging in the interpreter's code before the run (components/prefetch.py)
  --handoff       socket mode: ask for the fd itself (inject, default) or a relayed AF_UNIX end (relay)
  --requests      echo round trips on the connection; request_rtt_us is their median   default 1
"""


# The project's modules any mode may import on the way to a connection: paged in for every mode.
CONNECT_MODULES = ("pool_acquire", "listen_fds", "function_tls", "tls13", "ktls_socket")


def _parse(argv: list[str]) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "mode": None,
        "target": "echo:7000",
        "socket": "/run/cpm/pool.sock",
        "pool": "echo",
        "payload_size": 64,
        "fallback": True,
        "release": False,
        "timeout": 2.0,
        "transport": "tcp",
        "tls_ca": None,
        "tls_server_name": None,
        "tls_cert": None,
        "tls_key": None,
        "prefetch": True,
        "handoff": "inject",
        "requests": 1,
    }
    valued = {"--mode", "--target", "--socket", "--pool", "--payload-size", "--timeout", "--transport"}
    valued |= {"--tls-ca", "--tls-server-name", "--tls-cert", "--tls-key", "--handoff", "--requests"}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            sys.stdout.write(USAGE)
            raise SystemExit(0)
        key, eq, value = arg.partition("=")
        if key in valued:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise ValueError(f"{key} needs a value")
                value = argv[i]
            name = key[2:].replace("-", "_")
            if name in ("payload_size", "requests"):
                opts[name] = int(value)
            elif name == "timeout":
                opts[name] = float(value)
            else:
                opts[name] = value
        elif arg == "--fallback":
            opts["fallback"] = True
        elif arg == "--no-fallback":
            opts["fallback"] = False
        elif arg == "--release":
            opts["release"] = True
        elif arg == "--no-prefetch":
            opts["prefetch"] = False
        else:
            raise ValueError(f"unknown argument {arg!r}")
        i += 1
    if opts["mode"] not in ("direct", "socket", "fd3"):
        raise ValueError("--mode must be direct, socket or fd3")
    if opts["payload_size"] < 24:
        raise ValueError("--payload-size must be >= 24")
    if opts["handoff"] not in ("inject", "relay"):
        raise ValueError("--handoff must be inject or relay")
    if not 1 <= opts["requests"] <= 1000:
        raise ValueError("--requests must be between 1 and 1000")
    if opts["transport"] not in ("tcp", "tls"):
        raise ValueError("--transport must be tcp or tls")
    if opts["transport"] == "tls" and opts["release"]:
        raise ValueError("--release is not available with --transport tls (a TLS session is not reused)")
    return opts


def _split(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _peer(addr: tuple[Any, ...]) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect_direct(target: str, timeout: float) -> tuple[socket.socket, int, int]:
    """Resolve then connect; returns the socket and both phase durations in ns."""
    host, port = _split(target)
    t0 = time.perf_counter_ns()
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    t1 = time.perf_counter_ns()
    last: OSError | None = None
    for family, kind, proto, _name, addr in infos:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(addr)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        t2 = time.perf_counter_ns()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)  # blocking, like an injected connection
        return sock, t1 - t0, t2 - t1
    raise last or OSError(f"no address for {target}")


def check_fd(sock: socket.socket, expected_peer: str | None, relay: bool = False) -> dict[str, Any]:
    """What the received descriptor really is; ok only for a connected, blocking TCP socket, or
    with ``relay`` for a connected, blocking AF_UNIX stream (a socketpair end: it has no peer
    address, so the announced peer is the backend behind the relay and is not compared)."""
    import fcntl

    family = sock.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
    kind = sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
    is_tcp = family in (socket.AF_INET, socket.AF_INET6) and kind == socket.SOCK_STREAM
    try:
        name = sock.getpeername()  # an AF_UNIX socketpair end has no address, but it is connected
        peer: str | None = _peer(name) if is_tcp else "unix"
        local: str | None = _peer(sock.getsockname()) if is_tcp else "unix"
    except OSError:
        peer = local = None
    blocking = not fcntl.fcntl(sock.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
    if relay:
        ok = family == socket.AF_UNIX and kind == socket.SOCK_STREAM and peer is not None and blocking
        return {
            "family": "AF_UNIX" if family == socket.AF_UNIX else family,
            "type": "SOCK_STREAM" if kind == socket.SOCK_STREAM else kind,
            "connected": peer is not None,
            "peer": peer,
            "expected_peer": expected_peer,
            "peer_matches": True,
            "blocking": blocking,
            "relay": True,
            "ok": ok,
        }
    matches = expected_peer is None or peer == expected_peer
    return {
        "family": socket.AddressFamily(family).name if is_tcp else family,
        "type": "SOCK_STREAM" if kind == socket.SOCK_STREAM else kind,
        "connected": peer is not None,
        "peer": peer,
        "local": local,
        "expected_peer": expected_peer,
        "peer_matches": matches,
        "blocking": blocking,
        "ok": bool(is_tcp and peer is not None and matches and blocking),
    }


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def echo(sock: socket.socket, size: int, timeout: float) -> int:
    """Send a payload carrying a random nonce and read the whole echo back; returns ns."""
    nonce = os.urandom(8).hex().encode()
    payload = (b"REQ " + nonce + b" " + b"x" * size)[: size - 1] + b"\n"
    sock.settimeout(timeout)
    t0 = time.perf_counter_ns()
    sock.sendall(payload)
    got = bytearray()
    while len(got) < len(payload):
        chunk = sock.recv(len(payload) - len(got))
        if not chunk:
            raise ConnectionError(f"backend closed after {len(got)} of {len(payload)} echoed bytes")
        got += chunk
    elapsed = time.perf_counter_ns() - t0
    if bytes(got) != payload:
        raise ValueError("echo mismatch")
    sock.settimeout(None)
    return elapsed


def entry_ns(default: int) -> int:
    """The process entry: the fd-3 entrypoint's first instruction when it started us, else default."""
    raw = os.environ.get("COLDSTART_FD3_T_START_NS", "")
    return int(raw) if raw.isdigit() else default


def _adopt_fd3(rec: dict[str, Any], fallback: bool, t_main_ns: int) -> tuple[socket.socket | None, int]:
    """The connection inherited at fd 3, or (None, ns the caller waited) after a failed acquire."""
    t_import = time.perf_counter_ns()
    from components import listen_fds

    t0 = time.perf_counter_ns()
    rec["library_load_us"] = (t0 - t_import) / 1000
    rec.update(listen_fds.entrypoint_fields(t_main_ns))
    acquire_ns = int((listen_fds.acquire_us() or 0.0) * 1000)
    entry_verify_ns = int((listen_fds.verify_us() or 0.0) * 1000)
    rec["pre_main_us"] = (acquire_ns + entry_verify_ns) / 1000  # the entrypoint's part, before exec
    rec["library"] = "fd3-entrypoint+listen_fds"
    sock, reply, why = listen_fds.inherited()
    if sock is not None:
        rec["pool_id"] = reply.get("id")
        t_check = time.perf_counter_ns()
        rec["fd_check"] = check_fd(sock, reply.get("peer"))
        t_checked = time.perf_counter_ns()
        rec["fd_check_us"] = (t_checked - t_check) / 1000
        if rec["fd_check"]["ok"]:
            rec["t_connected_ns"] = time.time_ns()
            rec["fd_recv_us"] = rec["acquire_us"] = acquire_ns / 1000
            rec["verify_us"] = (entry_verify_ns + t_checked - t_check) / 1000
            rec["session_setup_us"] = (t_check - t0) / 1000  # the adoption: environment, reply, fd 3
            rec["connect_us"] = rec["acquire_us"] + rec["verify_us"] + rec["session_setup_us"]
            return sock, 0
        sock.close()
        why = f"bad_fd: {json.dumps(rec['fd_check'])}"
    if not fallback:
        raise ConnectionError(f"no connection at fd 3: {why}")
    rec["path"] = "fallback"
    rec["fallback_reason"] = why
    attempt_ns = acquire_ns + entry_verify_ns + time.perf_counter_ns() - t0
    rec["socket_attempt_us"] = attempt_ns / 1000
    return None, attempt_ns


def run(opts: dict[str, Any], t_main_ns: int) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "ok": False,
        "mode": opts["mode"],
        "path": opts["mode"],
        "error": None,
        "t_entry_ns": entry_ns(T_ENTRY_NS),
        "t_main_ns": t_main_ns,
        "t_connected_ns": None,
        "t_first_reply_ns": None,
        "t_end_ns": None,
        "resolve_us": None,
        "handshake_us": None,
        "fd_recv_us": None,
        "socket_attempt_us": None,
        "library_load_us": 0.0,
        "library": "socket",  # the client code the connection runs through (stdlib socket for direct TCP)
        "pre_main_us": 0.0,
        "acquire_us": None,
        "verify_us": None,
        "session_setup_us": None,
        "connect_us": None,
        "first_request_us": None,
        "request_rtt_us": None,
        "peer": None,
        "fd_check": None,
        "interfaces": [],
        "released": False,
        "fallback_reason": None,
        "pool_id": None,
        "handoff": None,
        "request_rtts_us": [],
    }
    timeout = opts["timeout"]
    sock: socket.socket | None = None
    attempt_ns = 0
    manager_error: str | None = None
    dropped: Any = None  # the reply of a grant whose fd never arrived, reported after the timed part
    try:
        if opts["mode"] == "socket":
            # The lean client (components/pool_acquire.py); a pool name needing JSON escaping
            # takes the full protocol module instead.
            t_import = time.perf_counter_ns()
            from components import pool_acquire as client

            asked = "relay" if opts["handoff"] == "relay" else None
            line = None
            if not client.plain_name(opts["pool"]):
                from components.protocol import encode_request

                line = encode_request("acquire", pool=opts["pool"], **({"handoff": asked} if asked else {}))
            rec["protocol_import_us"] = rec["library_load_us"] = (time.perf_counter_ns() - t_import) / 1000
            rec["library"] = client.__name__
            phases: dict[str, float] = {}
            t0 = time.perf_counter_ns()
            try:
                try:
                    sock, reply = client.acquire(
                        opts["socket"], opts["pool"], timeout, phases=phases, handoff=asked, line=line
                    )
                finally:
                    rec.update(phases)
                t_check = time.perf_counter_ns()
                rec["fd_recv_us"] = rec["acquire_us"] = (t_check - t0) / 1000
                rec["pool_id"] = reply.get("id")
                relayed = (reply.get("meta") or {}).get("handoff") == "relay"
                rec["handoff"] = "relay" if relayed else "fd"
                # The validity check runs on the very socket object returned above (as in direct
                # mode); its "local" address ties it to the echo that follows.
                rec["fd_check"] = check_fd(sock, reply.get("peer"), relay=relayed)
                rec["fd_check_us"] = rec["verify_us"] = (time.perf_counter_ns() - t_check) / 1000
                if relayed:
                    rec["peer"] = reply.get("peer")  # the backend the relay carries the bytes to
                if not rec["fd_check"]["ok"]:
                    raise client.PoolError("bad_fd", json.dumps(rec["fd_check"]))
                rec["session_setup_us"] = 0.0
                if opts["transport"] == "tls":
                    t_tls = time.perf_counter_ns()  # the TLS module's import counts, too
                    from components.function_tls import continue_injected

                    sock, tls_info = continue_injected(sock, reply, t_tls)
                    rec.update(tls_info)
                    tls_library = tls_info.get("tls_library_us") or 0.0
                    rec["library_load_us"] += tls_library
                    rec["library"] += "+components.tls13"
                    rec["session_setup_us"] = tls_info["tls_setup_us"] - tls_library
                rec["connect_us"] = rec["acquire_us"] + rec["verify_us"] + rec["session_setup_us"]
                rec["t_connected_ns"] = time.time_ns()
            except client.PoolError as exc:
                attempt_ns = time.perf_counter_ns() - t0
                if sock is not None:
                    sock.close()
                    sock = None
                if isinstance(exc, client.FdDroppedError):
                    dropped = exc.reply
                rec["fd_recv_us"] = rec["connect_us"] = rec["t_connected_ns"] = None
                rec["acquire_us"] = rec["verify_us"] = rec["session_setup_us"] = None
                if not opts["fallback"]:
                    raise
                rec["path"] = "fallback"
                rec["fallback_reason"] = f"{exc.code}: {exc.detail}" if exc.detail else exc.code
                rec["socket_attempt_us"] = attempt_ns / 1000
                manager_error = exc.code
        if opts["mode"] == "fd3":
            sock, attempt_ns = _adopt_fd3(rec, opts["fallback"], t_main_ns)
        if sock is None:
            sock, resolve_ns, handshake_ns = connect_direct(opts["target"], timeout)
            t_check = time.perf_counter_ns()
            rec["fd_check"] = check_fd(sock, None)
            rec["fd_check_us"] = rec["verify_us"] = (time.perf_counter_ns() - t_check) / 1000
            rec["resolve_us"] = resolve_ns / 1000
            rec["handshake_us"] = handshake_ns / 1000
            rec["acquire_us"] = (resolve_ns + handshake_ns) / 1000
            rec["session_setup_us"] = 0.0
            if opts["transport"] == "tls":
                t_tls = time.perf_counter_ns()
                from components.function_tls import direct_handshake

                sock, tls_info = direct_handshake(sock, opts, _split(opts["target"])[0], t_tls)
                rec.update(tls_info)
                rec["library_load_us"] += tls_info["ssl_import_us"]
                rec["library"] += "+ssl"
                rec["session_setup_us"] = tls_info["tls_context_us"] + tls_info["tls_handshake_us"]
            rec["connect_us"] = attempt_ns / 1000 + rec["acquire_us"] + rec["verify_us"] + rec["session_setup_us"]
            rec["t_connected_ns"] = time.time_ns()
        if rec["handoff"] != "relay":
            rec["peer"] = _peer(sock.getpeername())
        rtts = []
        for _ in range(opts["requests"]):
            rtts.append(echo(sock, opts["payload_size"], timeout) / 1000)
            if rec["t_first_reply_ns"] is None:
                rec["t_first_reply_ns"] = time.time_ns()
                rec["first_request_us"] = rtts[0]
        rec["request_rtts_us"] = rtts
        rec["request_rtt_us"] = _median(rtts)
        rec["ok"] = True
        if opts["release"] and rec["path"] == "socket" and rec["handoff"] != "relay":
            from components import protocol

            reply = protocol.release(opts["socket"], sock, opts["pool"], timeout)
            sock = None
            rec["released"] = bool(reply.get("reused"))
    except Exception as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"
        rec["ok"] = False
    finally:
        if sock is not None:
            sock.close()
    rec["t_end_ns"] = time.time_ns()
    if dropped is not None:
        from components import protocol

        rec["fd_drop_reported"] = protocol.report_fd_dropped(opts["socket"], opts["pool"], dropped, timeout=0.2)
    if manager_error is not None and manager_error not in ("manager_unavailable", "timeout"):
        # The manager answered but could not serve us: tell it, so its stats count fallbacks.
        from components import protocol

        with contextlib.suppress(protocol.PoolError, OSError):
            protocol.request(
                opts["socket"],
                "report",
                timeout=0.2,
                pool=opts["pool"],
                event="fallback",
                reason=rec["fallback_reason"],
            )
    try:
        rec["interfaces"] = [name for _idx, name in socket.if_nameindex()]
    except OSError:
        rec["interfaces"] = []
    return rec


def main(argv: list[str] | None = None) -> int:
    t_main_ns = time.time_ns()
    try:
        opts = _parse(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        sys.stderr.write(f"{exc}\n{USAGE}")
        return 2
    prefetched: dict[str, Any] = {"prefetch_us": None, "prefetch_bytes": None}
    if opts["prefetch"]:
        # Same for every mode and before any connection clock: see components/prefetch.py.
        t0 = time.perf_counter_ns()
        from components.prefetch import prefetch, prefetch_modules

        _files, covered = prefetch()
        covered += prefetch_modules(CONNECT_MODULES, os.path.dirname(__file__))
        prefetched = {"prefetch_us": (time.perf_counter_ns() - t0) / 1000, "prefetch_bytes": covered}
    rec = run(opts, t_main_ns)
    rec.update(prefetched)
    sys.stdout.write(json.dumps(rec) + "\n")
    sys.stdout.flush()
    return 0 if rec["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
