"""The pool-kind plug-in point, exercised with a fake kind module (no PostgreSQL involved)."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_pool_manager_support import Echo, Manager, echo_roundtrip, short_tmpdir, wait_for

from components import protocol

FAKE_KIND = textwrap.dedent(
    '''
    """Fake pool kind: sessions are plain TCP connections to the echo server, greeted once."""
    import os
    import socket
    import threading
    import weakref

    OPENED = 0
    _lock = threading.Lock()
    _META = weakref.WeakKeyDictionary()

    def open_session(config):
        global OPENED
        if os.path.exists(config["fail_flag"]):
            raise ConnectionRefusedError("fake backend refuses")
        host, port = config["target"].rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=2)
        sock.settimeout(None)
        with _lock:
            OPENED += 1
            n = OPENED
        meta = {"greeting": config["greeting"], "session": n, "thread": threading.current_thread().name}
        _META[sock] = meta
        return sock, meta

    def check_session(sock):
        # Reject every session while the flag file exists.
        return not os.path.exists(sock_flag())

    def sock_flag():
        return os.environ["FAKE_KIND_REJECT"]

    def close_session(sock):
        with open(os.environ["FAKE_KIND_CLOSED"], "a") as fh:
            fh.write("x")
        sock.close()

    def session_meta(sock):
        meta = _META.get(sock)
        return None if meta is None else dict(meta, refreshed=True)
    '''
)


def start(d: Path, echo: Echo, size: int = 3) -> Manager:
    (d / "fakekind.py").write_text(FAKE_KIND)
    cfg = {
        "pools": {
            "fake": {
                "kind": "fake",
                "module": "fakekind",
                "target": echo.target,
                "size": size,
                "greeting": "hi",
                "fail_flag": str(d / "fail"),
                "borrow_timeout": 0.5,
            }
        }
    }
    (d / "cfg.json").write_text(json.dumps(cfg))
    os.environ["FAKE_KIND_REJECT"] = str(d / "reject")
    os.environ["FAKE_KIND_CLOSED"] = str(d / "closed")
    old = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = str(d) + (os.pathsep + old if old else "")
    try:
        return Manager(d / "m.sock", echo.target, size, "--config", str(d / "cfg.json"), "--pool", "fake")
    finally:
        os.environ["PYTHONPATH"] = old


def test_plugin_sessions_carry_meta(echo: Echo) -> None:
    with short_tmpdir() as d:
        m = start(d, echo)
        try:
            assert m.ready is not None and m.ready["pools"] == {"fake": 3}
            sock, reply = protocol.acquire(m.sock_path, "fake")
            assert reply["meta"]["greeting"] == "hi"
            assert reply["meta"]["refreshed"] is True  # session_meta() consulted at hand-out
            assert reply["meta"]["thread"].startswith("cpm")  # opened off the event loop
            assert reply["peer"] == echo.target
            assert echo_roundtrip(sock)
            sock.close()
            st = m.stats()["pools"]["fake"]
            assert st["kind"] == "fake" and st["handed_out"] == 1
            wait_for(lambda: m.stats()["pools"]["fake"]["idle"] == 3, timeout=5)
        finally:
            m.stop()


def test_plugin_check_session_rejects_and_open_failure_backs_off(echo: Echo) -> None:
    with short_tmpdir() as d:
        m = start(d, echo)
        try:
            (d / "reject").write_text("")
            (d / "fail").write_text("")
            with pytest.raises(protocol.PoolError) as exc:
                protocol.acquire(m.sock_path, "fake")
            assert exc.value.code in ("backend_unavailable", "pool_exhausted")
            st = m.stats()["pools"]["fake"]
            assert st["discard_health"] >= 3  # every idle session failed its check
            assert len((d / "closed").read_text()) >= 3  # ...and was ended through close_session()
            assert st["connect_failures"] >= 1 and st["backend_up"] is False
            os.unlink(d / "reject")
            os.unlink(d / "fail")
            wait_for(lambda: m.stats()["pools"]["fake"]["idle"] == 3, timeout=8)
            sock, reply = protocol.acquire(m.sock_path, "fake")
            assert reply["meta"]["session"] > 3
            sock.close()
        finally:
            m.stop()


def test_release_not_supported_for_plugin_kinds(echo: Echo) -> None:
    with short_tmpdir() as d:
        m = start(d, echo, size=1)
        try:
            sock, _ = protocol.acquire(m.sock_path, "fake")
            out = protocol.release(m.sock_path, sock, "fake")
            assert out["reused"] is False and out["reason"] == "release_disabled"
        finally:
            m.stop()


REFRESH_KIND = textwrap.dedent(
    '''
    """Fake kind whose sessions need a round trip (check_session) once idle for 0.3 s."""
    import os
    import socket
    import time

    _LAST_OK = {}

    def open_session(config):
        host, port = config["target"].rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=2)
        sock.settimeout(None)
        _LAST_OK[sock.fileno()] = time.monotonic()
        return sock, {}

    def check_session(sock):
        with open(os.environ["REFRESH_KIND_CHECKS"], "a") as fh:
            fh.write("x")
        _LAST_OK[sock.fileno()] = time.monotonic()
        return True

    def quick_check(sock):
        last = _LAST_OK.get(sock.fileno())
        return None if last is None or time.monotonic() - last > 0.3 else True
    '''
)


def test_idle_sessions_are_proven_alive_in_the_background(echo: Echo) -> None:
    """A session idle past its check delay gets its round trip from the sweep, not at hand-out."""
    with short_tmpdir() as d:
        (d / "refreshkind.py").write_text(REFRESH_KIND)
        cfg = {"health_interval": 0.1, "pools": {"r": {"kind": "r", "module": "refreshkind", "target": echo.target,
                                                         "size": 2}}}  # fmt: skip
        (d / "cfg.json").write_text(json.dumps(cfg))
        os.environ["REFRESH_KIND_CHECKS"] = str(d / "checks")
        old = os.environ.get("PYTHONPATH", "")
        os.environ["PYTHONPATH"] = str(d) + (os.pathsep + old if old else "")
        try:
            m = Manager(d / "m.sock", echo.target, 2, "--config", str(d / "cfg.json"), "--pool", "r")
        finally:
            os.environ["PYTHONPATH"] = old
        try:
            checks = d / "checks"
            # idle for well past 0.3 s: the sweep has run check_session on both sessions
            wait_for(lambda: checks.exists() and len(checks.read_text()) >= 4, timeout=5)
            sock, _ = protocol.acquire(m.sock_path, "r")
            assert echo_roundtrip(sock)
            sock.close()
            st = m.stats()["pools"]["r"]
            assert st["handed_out"] == 1 and st["discard_health"] == 0
        finally:
            m.stop()
