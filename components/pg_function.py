"""The OLTP function: get a PostgreSQL session, run one TPC-B-like transfer, verify it, report.

``--mode direct`` resolves, connects and lets pg8000 (a mainstream pure-Python driver) do the
startup and SCRAM-SHA-256 authentication, each phase timed on the wire. ``--mode socket``
acquires an already authenticated session from the pool manager and adopts it at
ReadyForQuery (``fd_recv_us`` = ``acquire_us``); it needs no credentials. Both then run the same
transaction with the same client (``components.pg_wire``, one round trip per statement), so
``request_rtt_us`` compares the sessions, not two client libraries.

After the transfer it runs ``--queries N`` point reads, each timed (``query_us``, their median
``query_p50_us`` and the first ``query_first_us``), so per-query latency is measured, not only
the first statement: through a proxy such as PgBouncer every query pays the extra hop.
``--host`` starting with ``/`` is a Unix socket directory (libpq's convention): the function
connects to ``<dir>/.s.PGSQL.<port>``, e.g. a bind-mounted PgBouncer socket with no network.

Equal footing: both modes load the same client modules before their connect clock (pg8000, the
driver direct mode authenticates with, plus ``components.pg_pool`` and ``components.pg_wire``;
socket mode also the pool client ``components.protocol``) and time that as ``library_load_us``,
so the driver's import is in both arms; both page in their code first (``components.prefetch``)
and both query through ``pg_wire``. Phases as in every function (coldstart_bench/phases.py):
``acquire_us`` (resolve + TCP, or the pool acquire with the fd), ``verify_us`` (0: neither mode
checks the socket), ``session_setup_us`` (startup + SCRAM, or adopting the session),
``connect_us`` their sum, ``first_request_us`` the transfer's first statement.

Prints exactly one JSON line (the echo function's keys plus the PostgreSQL phases) and exits
0 iff the transfer committed and was verified.
"""

from __future__ import annotations

import time

T_ENTRY_NS = time.time_ns()  # first thing: the process is up and Python is running

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

# Must match images/postgres/schema.sql.
DEFAULT_ACCOUNTS = 100
DEFAULT_QUERIES = 5


def _us(start_ns: int, end_ns: int) -> float:
    return round((end_ns - start_ns) / 1e3, 1)


def _interfaces() -> list[str]:
    try:
        return [name for _, name in socket.if_nameindex()]
    except OSError:
        return []


def _peer(sock: socket.socket) -> str:
    try:
        addr = sock.getpeername()
    except OSError:
        return ""
    if isinstance(addr, str):  # a Unix socket: its path
        return addr
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _read_password(path: str | None) -> str | None:
    if not path:
        return None
    with open(path, encoding="utf-8") as fh:
        return fh.read().rstrip("\r\n")


DRIVER = "pg8000"


def load_client(rec: dict[str, Any], pool_client: bool) -> None:
    """The same driver module set in both modes (plus the pool client for socket mode), timed."""
    t = time.perf_counter_ns()
    import pg8000.native  # noqa: F401  (direct mode authenticates with it; socket mode loads it alike)

    from components import pg_pool, pg_wire  # noqa: F401

    if pool_client:
        from components import protocol  # noqa: F401
    rec["import_us"] = rec["library_load_us"] = _us(t, time.perf_counter_ns())
    rec["library"] = f"{DRIVER}+pg_wire" + ("+protocol" if pool_client else "")


def connect_direct(args: argparse.Namespace, rec: dict[str, Any]) -> tuple[Any, socket.socket]:
    """resolve → TCP → startup → SCRAM auth → ReadyForQuery, each timed; returns (session, socket)."""
    from components import pg_pool, pg_wire

    password = _read_password(args.password_file)

    t0 = time.perf_counter_ns()
    infos: list[tuple[Any, ...]]
    if args.host.startswith("/"):
        # A Unix socket directory: nothing to resolve.
        infos = [(socket.AF_UNIX, socket.SOCK_STREAM, 0, "", f"{args.host.rstrip('/')}/.s.PGSQL.{args.port}")]
    else:
        infos = socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM)
    t_resolved = time.perf_counter_ns()
    last_exc: OSError | None = None
    sock: socket.socket | None = None
    for family, kind, proto, _canon, addr in infos:
        candidate = socket.socket(family, kind, proto)
        candidate.settimeout(args.timeout)
        try:
            candidate.connect(addr)
        except OSError as exc:
            candidate.close()
            last_exc = exc
            continue
        sock = candidate
        break
    if sock is None:
        raise OSError(f"cannot connect to {args.host}:{args.port}: {last_exc}")
    t_tcp = time.perf_counter_ns()
    if sock.family != socket.AF_UNIX:
        # What libpq does too; keepalive as the pool sets it, so both sessions are configured alike.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    tls_us = 0.0
    if args.tls_ca:
        # libpq's sslmode=verify-full with TLS 1.3: SSLRequest, handshake, certificate and host name.
        t_ssl = time.perf_counter_ns()
        import ssl

        t_ctx = time.perf_counter_ns()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(cafile=args.tls_ca)
        t_req = time.perf_counter_ns()
        pg_pool.ssl_request(sock)
        tls_sock = ctx.wrap_socket(sock, server_hostname=args.tls_server_name or args.host)
        t_tls = time.perf_counter_ns()
        cipher = tls_sock.cipher()
        rec.update(
            ssl_import_us=_us(t_ssl, t_ctx),
            tls_context_us=_us(t_ctx, t_req),
            tls_handshake_us=_us(t_req, t_tls),
            tls_version=tls_sock.version(),
            tls_cipher_suite=cipher[0] if cipher else None,
            tls_path="handshake",
        )
        tls_us = (t_tls - t_ssl) / 1e3
        conn, trace = pg_pool.traced_handshake_over(
            tls_sock,
            user=args.user,
            password=password,
            database=args.database,
            application_name="coldstart-function",
            startup_params={"client_encoding": "UTF8"},
        )
        plain: Any = tls_sock
    else:
        conn, trace, traced = pg_pool.traced_handshake(
            sock,
            user=args.user,
            password=password,
            database=args.database,
            application_name="coldstart-function",
            startup_params={"client_encoding": "UTF8"},
        )
        plain = pg_pool._take_socket(conn, traced)
    key = conn._backend_key_data or b""
    params = {str(k): str(v) for k, v in conn.parameter_statuses.items()}
    session = pg_wire.Session(plain, parameters=params)
    if len(key) >= 8:
        session.backend_pid, session.secret_key = struct.unpack("!ii", key[:8])
    t_ready = time.perf_counter_ns()
    # `import ssl` is library load, like the driver's; the rest of the TLS set-up is session set-up.
    ssl_import_us = float(rec.get("ssl_import_us") or 0.0) if args.tls_ca else 0.0
    rec["library_load_us"] = round((rec.get("library_load_us") or 0.0) + ssl_import_us, 1)
    rec.update(
        resolve_us=_us(t0, t_resolved),
        handshake_us=_us(t_resolved, t_tcp),
        acquire_us=_us(t0, t_tcp),
        verify_us=0.0,
        session_setup_us=round(_us(t_tcp, t_ready) - ssl_import_us, 1),
        startup_us=round(trace.startup_us, 1),
        auth_us=round(trace.auth_us, 1),
        connect_us=round(_us(t0, t_ready) - ssl_import_us, 1),
        tls_us=round(tls_us, 1) if args.tls_ca else None,
        auth_method={10: "sasl", 0: "trust", 5: "md5", 3: "password"}.get(trace.auth_method, str(trace.auth_method)),
    )
    return session, plain


def connect_socket(args: argparse.Namespace, rec: dict[str, Any]) -> tuple[Any, socket.socket]:
    """Acquire an authenticated session from the pool manager and adopt it."""
    from components import pg_wire, protocol

    t0 = time.perf_counter_ns()
    sock, reply = protocol.acquire(args.socket, pool=args.pool, timeout=args.timeout, handoff=args.handoff)
    t_fd = time.perf_counter_ns()
    meta = reply.get("meta") or {}
    rec["handoff"] = "relay" if meta.get("handoff") == "relay" else "fd"
    transport: Any = sock
    tls_library_us = 0.0
    if isinstance(meta.get("tls"), dict):
        # A session over TLS: continued with the handed-over keys, or plaintext (kernel TLS, relay).
        from components.function_tls import continue_injected

        transport, tls_info = continue_injected(sock, reply, t_fd)
        rec.update(tls_info)
        tls_library_us = tls_info.get("tls_library_us") or 0.0
    session = pg_wire.Session.adopt(transport, meta)
    t1 = time.perf_counter_ns()
    # The TLS library's load (import, libcrypto binding) is library load, like the driver's.
    rec["library_load_us"] = round((rec.get("library_load_us") or 0.0) + tls_library_us, 1)
    rec.update(
        fd_recv_us=_us(t0, t_fd),
        acquire_us=_us(t0, t_fd),
        verify_us=0.0,
        session_setup_us=round(_us(t_fd, t1) - tls_library_us, 1),
        connect_us=round(_us(t0, t1) - tls_library_us, 1),
    )
    rec["pool_setup_us"] = (reply.get("meta") or {}).get("setup_us")
    return session, sock


def transfer(session: Any, accounts: int, transfer_id: str, rng: random.Random) -> dict[str, Any]:
    """One TPC-B-like transfer: lock both accounts, move the amount, log it, commit; then check
    the balances moved by exactly the amount and the history row is visible after commit."""
    src, dst = rng.sample(range(1, accounts + 1), 2)
    amount = rng.randint(1, 1000)
    t0 = time.perf_counter_ns()
    session.begin()
    locked = session.query("SELECT id, balance FROM accounts WHERE id IN ($1, $2) ORDER BY id FOR UPDATE", (src, dst))
    t_first = time.perf_counter_ns()
    t_first_reply_ns = time.time_ns()
    before = {int(r[0] or 0): int(r[1] or 0) for r in locked.rows}
    if len(before) != 2:
        raise RuntimeError(f"accounts {src}/{dst} not found (is the schema loaded?)")
    debit = session.query("UPDATE accounts SET balance = balance - $1 WHERE id = $2 RETURNING balance", (amount, src))
    credit = session.query("UPDATE accounts SET balance = balance + $1 WHERE id = $2 RETURNING balance", (amount, dst))
    session.query(
        "INSERT INTO history (transfer_id, from_id, to_id, amount) VALUES ($1, $2, $3, $4)",
        (transfer_id, src, dst, amount),
    )
    session.commit()
    t_commit = time.perf_counter_ns()
    problems = []
    if int(debit.scalar() or 0) != before[src] - amount:
        problems.append("debit balance mismatch")
    if int(credit.scalar() or 0) != before[dst] + amount:
        problems.append("credit balance mismatch")
    seen = session.query("SELECT count(*) FROM history WHERE transfer_id = $1", (transfer_id,)).scalar()
    t_verified = time.perf_counter_ns()
    if seen != "1":
        problems.append(f"history has {seen} rows for the transfer")
    if session.tx_status != "I":
        problems.append(f"session left in transaction status {session.tx_status}")
    return {
        "t_first_reply_ns": t_first_reply_ns,
        "first_query_us": _us(t0, t_first),
        "first_request_us": _us(t0, t_first),
        "request_rtt_us": _us(t0, t_commit),
        "transfer_check_us": _us(t_commit, t_verified),
        "verified": not problems,
        "verify_error": "; ".join(problems),
        "amount": amount,
        "from_id": src,
        "to_id": dst,
    }


def point_reads(session: Any, accounts: int, n: int, rng: random.Random) -> dict[str, Any]:
    """n single-row reads, each its own round trip (and, through a transaction pooler, its own
    server assignment); every one must return exactly one row."""
    times: list[float] = []
    for _ in range(n):
        account = rng.randint(1, accounts)
        t0 = time.perf_counter_ns()
        result = session.query("SELECT balance FROM accounts WHERE id = $1", (account,))
        times.append(_us(t0, time.perf_counter_ns()))
        if len(result.rows) != 1:
            raise RuntimeError(f"point read of account {account} returned {len(result.rows)} rows")
    ordered = sorted(times)
    mid = len(ordered) // 2
    median = (ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2) if ordered else None
    return {
        "queries": n,
        "query_us": times,
        "query_first_us": times[0] if times else None,
        "query_p50_us": round(median, 1) if median is not None else None,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m components.pg_function",
        description="Cold-start OLTP function: one TPC-B-like transfer over a direct or an injected session.",
    )
    p.add_argument("--mode", choices=("direct", "socket"), required=True)
    p.add_argument("--host", default="db", help="database host, or a Unix socket directory if it starts with /")
    p.add_argument("--port", type=int, default=5432)
    p.add_argument("--database", default="bench")
    p.add_argument("--user", default="bench")
    p.add_argument("--password-file", help="file holding the password (direct mode and fallback only)")
    p.add_argument("--socket", default="/run/cpm/pool.sock", help="pool manager socket (socket mode)")
    p.add_argument("--pool", default="pg", help="pool name (socket mode)")
    p.add_argument("--fallback", action="store_true", help="connect directly when the manager fails")
    p.add_argument("--handoff", choices=("inject", "relay"), help="ask the pool for this hand-off (socket mode)")
    p.add_argument("--tls-ca", help="CA file: connect over TLS 1.3 verifying the server (direct mode)")
    p.add_argument("--tls-server-name", help="name the server certificate must carry (default: --host)")
    p.add_argument("--accounts", type=int, default=DEFAULT_ACCOUNTS, help="accounts in the schema")
    p.add_argument("--queries", type=int, default=DEFAULT_QUERIES, help="timed point reads after the transfer (>= 0)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds for acquire, connect and each reply")
    p.add_argument("--transfer-id", help="id for the history row (default: random)")
    p.add_argument("--no-prefetch", action="store_true", help="skip paging in its code first (components/prefetch.py)")
    return p


def run(argv: list[str] | None = None) -> dict[str, Any]:
    t_main_ns = time.time_ns()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.queries < 0:
        parser.error("--queries must be >= 0")
    transfer_id = args.transfer_id or os.urandom(12).hex()
    rec: dict[str, Any] = {
        "ok": False,
        "mode": args.mode,
        "path": args.mode,
        "error": None,
        "t_entry_ns": _entry_ns(),
        "t_main_ns": t_main_ns,
        "t_connected_ns": None,
        "t_first_reply_ns": None,
        "t_end_ns": None,
        "library": "",
        "library_load_us": None,
        "pre_main_us": 0.0,
        "acquire_us": None,
        "verify_us": None,
        "session_setup_us": None,
        "first_request_us": None,
        "prefetch_us": None,
        "prefetch_bytes": None,
        "resolve_us": None,
        "handshake_us": None,
        "fd_recv_us": None,
        "connect_us": None,
        "request_rtt_us": None,
        "peer": None,
        "interfaces": _interfaces(),
        "released": False,  # sessions are single-use: the function terminates its own
        "startup_us": None,
        "auth_us": None,
        "first_query_us": None,
        "transfer_check_us": None,
        "import_us": None,
        "backend_pid": None,
        "database": args.database,
        "transfer_id": transfer_id,
        "verified": False,
        "fallback_reason": None,
        "socket_attempt_us": None,
        "auth_method": None,
        "queries": args.queries,
        "query_us": [],
        "query_first_us": None,
        "query_p50_us": None,
        "handoff": None,
        "tls_us": None,
        "tls_path": None,
        "tls_version": None,
    }
    session = None
    if not args.no_prefetch:
        # Same for both modes and before any clock of the connection: see components/prefetch.py.
        t_prefetch = time.perf_counter_ns()
        from components.prefetch import prefetch

        _files, covered = prefetch()
        rec.update(prefetch_us=_us(t_prefetch, time.perf_counter_ns()), prefetch_bytes=covered)
    try:
        load_client(rec, pool_client=args.mode == "socket")
        if args.mode == "socket":
            t_attempt = time.perf_counter_ns()
            try:
                session, sock = connect_socket(args, rec)
            except Exception as exc:
                if not args.fallback:
                    raise
                rec["path"] = "fallback"
                rec["fallback_reason"] = f"{type(exc).__name__}: {exc}"
                rec["fd_recv_us"] = None
                attempt_us = _us(t_attempt, time.perf_counter_ns())
                rec["socket_attempt_us"] = attempt_us
                session, sock = connect_direct(args, rec)
                # What the caller waited for a usable session includes the failed attempt.
                rec["connect_us"] = round(rec["connect_us"] + attempt_us, 1)
        else:
            session, sock = connect_direct(args, rec)
        rec["t_connected_ns"] = time.time_ns()
        rec["peer"] = _peer(sock)
        rec["backend_pid"] = session.backend_pid
        session.settimeout(args.timeout)
        rng = random.Random()
        rec.update(transfer(session, args.accounts, transfer_id, rng))
        rec.update(point_reads(session, args.accounts, args.queries, rng))
        rec["ok"] = bool(rec["verified"])
        if not rec["ok"]:
            rec["error"] = rec["verify_error"]
    except Exception as exc:
        rec["error"] = _describe(exc)
    finally:
        if session is not None:
            session.close()
    rec["t_end_ns"] = time.time_ns()
    return rec


def _entry_ns() -> int:
    """The fd-3 entrypoint's first instruction when it started this process, else the module's top."""
    raw = os.environ.get("COLDSTART_FD3_T_START_NS", "")
    return int(raw) if raw.isdigit() else T_ENTRY_NS


def _describe(exc: BaseException) -> str:
    """One readable line; pg8000 errors carry the server's fields as a dict."""
    arg = exc.args[0] if exc.args else None
    if isinstance(arg, dict):
        return f"{type(exc).__name__}: {arg.get('S', 'ERROR')} {arg.get('C', '')}: {arg.get('M', '')}"
    code = getattr(exc, "code", None) or getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__}{f' [{code}]' if code else ''}: {exc}"


def main(argv: list[str] | None = None) -> int:
    rec = run(argv)
    sys.stdout.write(json.dumps(rec, separators=(",", ":")) + "\n")
    sys.stdout.flush()
    return 0 if rec["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
