"""Adopt a connection inherited at fd 3 from components/c/fd3_entrypoint.c (socket activation style).

The entrypoint acquires the connection before the runtime starts and execs the function with
``LISTEN_FDS=1``, ``LISTEN_PID=<pid>``, ``LISTEN_FDNAMES=<pool>`` and the manager's reply in
``COLDSTART_FD3_REPLY``; on failure those are unset and ``COLDSTART_FD3_FALLBACK`` says why.
Either way ``COLDSTART_FD3_ACQUIRE_US`` (time the acquire took), ``COLDSTART_FD3_VERIFY_US`` (the
fd check and the move to fd 3), ``COLDSTART_FD3_T_START_NS``
and ``COLDSTART_FD3_T_EXEC_NS`` (CLOCK_REALTIME stamps: entrypoint main, just before exec) are set.

Stdlib only and cheap to import: the function imports it in a cold process.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

LISTEN_FD = 3  # SD_LISTEN_FDS_START
NO_ENTRYPOINT = "no_listen_fds: LISTEN_FDS/LISTEN_PID do not name this process (not started by the fd-3 entrypoint?)"


def _int_env(name: str) -> int | None:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return None


def _float_env(name: str) -> float | None:
    try:
        return float(os.environ[name])
    except (KeyError, ValueError):
        return None


def entrypoint_fields(t_main_ns: int) -> dict[str, Any]:
    """Record fields about the entrypoint: its stamps and the runtime's start-up (exec -> main)."""
    t_exec = _int_env("COLDSTART_FD3_T_EXEC_NS")
    return {
        "t_entry_ns": _int_env("COLDSTART_FD3_T_START_NS"),
        "t_exec_ns": t_exec,
        "runtime_startup_us": round((t_main_ns - t_exec) / 1e3, 1) if t_exec else None,
    }


def acquire_us() -> float | None:
    """Microseconds the entrypoint spent acquiring (successful or not); None without it."""
    return _float_env("COLDSTART_FD3_ACQUIRE_US")


def verify_us() -> float | None:
    """Microseconds the entrypoint spent checking the fd and moving it to fd 3; None without it."""
    return _float_env("COLDSTART_FD3_VERIFY_US")


def inherited() -> tuple[socket.socket | None, dict[str, Any], str | None]:
    """(socket at fd 3, manager reply, None) when it was passed to this process, else
    (None, {}, why not). The check follows sd_listen_fds: LISTEN_PID must be our pid."""
    if os.environ.get("LISTEN_FDS") != "1" or _int_env("LISTEN_PID") != os.getpid():
        return None, {}, os.environ.get("COLDSTART_FD3_FALLBACK") or NO_ENTRYPOINT
    try:
        reply = json.loads(os.environ.get("COLDSTART_FD3_REPLY") or "{}")
    except ValueError:
        reply = {}
    try:
        sock = socket.socket(fileno=LISTEN_FD)
    except OSError as exc:
        return None, {}, f"bad_fd: fd {LISTEN_FD} is not a socket: {exc}"
    sock.set_inheritable(False)  # ours now, not for any child
    return sock, reply if isinstance(reply, dict) else {}, None
