"""The plug-in hook ``prepare_handout``: idle sessions that legitimately received bytes go out clean."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from test_pool_manager_support import Echo, Manager, echo_roundtrip

from components import protocol

TICKET_KIND = textwrap.dedent(
    '''
    """Sessions to the echo server that receive a "ticket" while idle (as TLS sessions do)."""
    import os
    import socket
    import time

    def open_session(config):
        host, port = config["target"].rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=2)
        sock.settimeout(None)
        sock.sendall(b"ticket-1\\n")  # echoed back: bytes waiting on an idle session
        return sock, {"opened": True}

    def check_session(sock):
        return True

    def quick_check(sock):
        return True

    def prepare_handout(sock, session):
        if os.path.exists(os.environ["TICKET_KIND_FAIL"]):
            raise RuntimeError("refused by the test")
        deadline = time.monotonic() + 1
        data = b""
        while not data.endswith(b"\\n") and time.monotonic() < deadline:
            try:
                data += sock.recv(64, socket.MSG_DONTWAIT)
            except BlockingIOError:
                time.sleep(0.001)
        return {**session, "ticket": data.decode()}
    '''
)


def test_prepare_handout_consumes_idle_bytes_and_sets_meta(echo: Echo, sockdir: Path) -> None:
    (sockdir / "ticketkind.py").write_text(TICKET_KIND)
    cfg = {"pools": {"t": {"kind": "ticket", "module": "ticketkind", "target": echo.target, "size": 2}}}
    (sockdir / "cfg.json").write_text(json.dumps(cfg))
    env = {"PYTHONPATH": str(sockdir), "TICKET_KIND_FAIL": str(sockdir / "fail")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        m = Manager(sockdir / "m.sock", echo.target, 2, "--config", str(sockdir / "cfg.json"), "--pool", "t")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        for _ in range(3):
            sock, reply = protocol.acquire(m.sock_path, "t")
            assert reply["meta"] == {"opened": True, "ticket": "ticket-1\n"}
            assert echo_roundtrip(sock)  # nothing left unread before our own bytes
            sock.close()
        (sockdir / "fail").write_text("")
        try:
            protocol.acquire(m.sock_path, "t", timeout=3)
        except protocol.PoolError as exc:
            assert exc.code in ("pool_exhausted", "backend_unavailable", "timeout")
        else:
            raise AssertionError("a session whose prepare_handout failed was handed out")
        assert m.stats()["pools"]["t"]["discard_health"] >= 1
        assert m.proc.poll() is None
    finally:
        m.stop()
