"""The TLS hand-off paths: the choice (ktls | record | relay | auto), the relay codec that keeps
the keys in the manager, and the manager continuing sessions with a TLS 1.3 backend it did not
start on every path this host supports."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_pool_manager_support import REPO, Manager, env, short_tmpdir
from tls_helpers import OpenSSLPeer, TlsEcho, client_config, server_context

from coldstart_bench.measure.tls_certs import RunCertificates, make_run_certificates, openssl_path
from components import protocol, tls13, tls_pool
from components.relay import RelayHub

# -- the choice ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("handoff", "fallback", "ulp", "path"),
    [
        ("auto", "record", True, "ktls"),
        ("auto", "record", False, "record"),
        ("auto", "relay", False, "relay"),
        ("auto", "relay", True, "ktls"),
        ("relay", "record", True, "relay"),
        ("record", "record", True, "record"),
        ("ktls", "record", False, "ktls"),  # asked by name: the hand-out then refuses without the ULP
    ],
)
def test_choose_handoff(handoff: str, fallback: str, ulp: bool, path: str) -> None:
    assert tls_pool.choose_handoff(handoff, fallback, ulp_available=ulp) == path


def test_handoff_setting_validates_and_keeps_the_older_ktls_key() -> None:
    assert tls_pool.handoff_setting({}) == ("auto", "record")
    assert tls_pool.handoff_setting({"handoff": "inject", "ktls": "off"}) == ("record", "record")
    assert tls_pool.handoff_setting({"ktls": "on"}) == ("ktls", "record")
    assert tls_pool.handoff_setting({"handoff": "auto", "fallback": "relay"}) == ("auto", "relay")
    with pytest.raises(tls_pool.TlsSessionError, match="handoff must be one of"):
        tls_pool.handoff_setting({"handoff": "splice"})
    with pytest.raises(tls_pool.TlsSessionError, match="fallback must be one of"):
        tls_pool.handoff_setting({"handoff": "auto", "fallback": "ktls"})


def test_pool_config_accepts_tls_handoffs_only_for_plugin_kinds() -> None:
    from components.pool_config import ConfigError, pool_from_dict

    pool_from_dict("t", {"kind": "tls", "target": "h:1", "handoff": "record"}).validate()
    with pytest.raises(ConfigError, match="handoff must be one of inject, relay"):
        pool_from_dict("e", {"target": "h:1", "handoff": "record"}).validate()


# -- the relay codec ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunCertificates]:
    if openssl_path() is None:
        pytest.skip("the openssl command is not installed (needed to make the run's certificates)")
    yield make_run_certificates(tmp_path_factory.mktemp("certs"))


def _relayed(certs: RunCertificates, behaviour: object) -> tuple[OpenSSLPeer, socket.socket, RelayHub]:
    """A stock OpenSSL server handshaken by the manager's code, relayed: returns the caller's end."""
    cfg = client_config(certs)
    peer = OpenSSLPeer(server_context(certs), behaviour, tls_pool.client_context(cfg))  # type: ignore[arg-type]
    session = peer.session()
    fn_end, mgr_end = socket.socketpair()
    fn_end.settimeout(10)
    hub = RelayHub()
    hub.start()
    hub.add(mgr_end, peer.client_sock, codec=tls13.RelayCodec(session))
    return peer, fn_end, hub


def _read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def test_relay_codec_carries_plaintext_both_ways_and_ends_with_close_notify(certs: RunCertificates) -> None:
    payload = bytes(range(256)) * 300  # several records each way, split anywhere

    def server(tls: object) -> int:
        got = b""
        while len(got) < len(payload):
            got += tls.recv(65536)  # type: ignore[attr-defined]
        tls.sendall(got[::-1])  # type: ignore[attr-defined]
        return len(got)

    peer, fn_end, hub = _relayed(certs, server)
    try:
        fn_end.sendall(payload)
        back = b""
        while len(back) < len(payload):
            back += fn_end.recv(65536)
        assert back == payload[::-1]
        # The server's context manager ends with close_notify: the caller then reads EOF.
        assert peer.join() == len(payload)
        assert _read_all(fn_end) == b""
    finally:
        fn_end.close()
        hub.close()


def test_relay_delivers_what_the_server_sends_first_then_the_callers_reply(certs: RunCertificates) -> None:
    def server(tls: object) -> bytes:
        tls.sendall(b"before")  # type: ignore[attr-defined]
        tls.recv(100)  # type: ignore[attr-defined]  # the caller's "ack"
        return b"ok"

    peer, fn_end, hub = _relayed(certs, server)
    try:
        assert fn_end.recv(100) == b"before"
        fn_end.sendall(b"ack")
        assert peer.join() == b"ok"
    finally:
        fn_end.close()
        hub.close()


def test_relay_codec_turns_a_tampered_record_into_a_reset() -> None:
    client, server = _session_pair()
    codec = tls13.RelayCodec(client)
    record = bytearray(server.writer.seal(tls13.APPLICATION_DATA, b"hello"))
    assert tls13.RelayCodec(_session_pair()[0]).open(b"") == b""
    record[-1] ^= 1
    with pytest.raises(tls13.TLSRecordError, match="failed authentication"):
        codec.open(bytes(record))


def test_relay_codec_opens_records_split_anywhere_and_queues_key_update_answers() -> None:
    client, server = _session_pair()
    codec = tls13.RelayCodec(client)
    stream = server.writer.seal(tls13.APPLICATION_DATA, b"abc")
    stream += server.writer.seal(tls13.HANDSHAKE, bytes([tls13.KEY_UPDATE, 0, 0, 1, 1]))  # update_requested
    server.writer.update()
    stream += server.writer.seal(tls13.APPLICATION_DATA, b"def")
    got = b"".join(codec.open(stream[i : i + 7]) for i in range(0, len(stream), 7))
    assert got == b"abcdef"
    answer = codec.take_out()  # our KeyUpdate, sealed with the old write keys
    header, body = answer[:5], answer[5:]
    assert server.reader.open(header, body)[0] == tls13.HANDSHAKE
    server.reader.update()
    sealed = codec.seal(b"after")  # with the new write keys
    assert server.reader.open(sealed[:5], sealed[5:]) == (tls13.APPLICATION_DATA, b"after")
    close = codec.close_out()
    assert server.reader.open(close[:5], close[5:]) == (tls13.ALERT, bytes([1, tls13.CLOSE_NOTIFY]))
    assert codec.close_out() == b""


def _session_pair() -> tuple[tls13.TLSSession, tls13.TLSSession]:
    from tls_helpers import session_pair

    return session_pair()


# -- the manager, a backend it did not start, every path this host has --------------------------


def _paths() -> list[str]:
    return ["record", "relay"] + (["ktls"] if tls_pool.ktls_available() else [])


def _function(sock_path: str, *extra: str) -> dict[str, object]:
    args = [sys.executable, "-m", "components.function", "--socket", sock_path, "--pool", "tls", "--mode", "socket"]
    proc = subprocess.run(
        [*args, "--transport", "tls", "--no-fallback", *extra],
        capture_output=True,
        text=True,
        env=env(),
        cwd=REPO,
        timeout=30,
    )
    assert proc.stdout, proc.stderr
    record: dict[str, object] = json.loads(proc.stdout)
    return record


@pytest.mark.parametrize("handoff", _paths())
def test_manager_continues_sessions_with_a_foreign_tls13_backend(certs: RunCertificates, handoff: str) -> None:
    backend = TlsEcho(certs)  # a stock OpenSSL server the manager neither started nor configured
    try:
        with short_tmpdir() as d:
            pool = {"kind": "tls", "target": backend.target, "ca_file": str(certs.ca_cert)}
            pool |= {"server_name": "localhost", "handoff": handoff, "size": 2}
            cfg = d / "cpm.json"
            cfg.write_text(json.dumps({"pools": {"tls": pool}}))
            m = Manager(d / "pool.sock", backend.target, 2, "--config", str(cfg), "--pool", "tls")
            try:
                rec = _function(m.sock_path, "--requests", "3")
                want = {"record": "record_layer", "relay": "relay", "ktls": "ktls"}[handoff]
                assert rec["ok"] is True, rec
                assert rec["tls_path"] == want and rec["tls_version"] == "TLSv1.3"
                assert rec["handoff"] == ("relay" if handoff == "relay" else "fd")
                # The pool's path can be overridden per acquire: relay on a record pool and back.
                sock, reply = protocol.acquire(m.sock_path, "tls", handoff="inject" if handoff == "relay" else "relay")
                tls = reply["meta"]["tls"]
                if tls["path"] == "relay":
                    assert "client_traffic_secret" not in tls and "client_key" not in tls
                    conn: object = sock
                else:
                    conn = tls13.continue_session(sock, tls)
                conn.sendall(b"other path")  # type: ignore[attr-defined]
                assert conn.recv(100) == b"other path"  # type: ignore[attr-defined]
                conn.close()  # type: ignore[attr-defined]
                stats = m.stats()
                assert stats["pools"]["tls"]["handed_out"] == 2
                assert stats["relay"]["started"] == 1
            finally:
                m.stop()
    finally:
        backend.stop()


def test_relay_pool_keeps_the_keys_in_the_manager(certs: RunCertificates) -> None:
    backend = TlsEcho(certs)
    try:
        with short_tmpdir() as d:
            pool = {"kind": "tls", "target": backend.target, "ca_file": str(certs.ca_cert)}
            pool |= {"server_name": "localhost", "handoff": "auto", "fallback": "relay", "size": 1}
            (d / "cpm.json").write_text(json.dumps({"pools": {"tls": pool}}))
            m = Manager(d / "pool.sock", backend.target, 1, "--config", str(d / "cpm.json"), "--pool", "tls")
            try:
                sock, reply = protocol.acquire(m.sock_path, "tls")
                tls = reply["meta"]["tls"]
                expected = "ktls" if tls_pool.ktls_available() else "relay"
                assert tls["path"] == expected
                if expected == "relay":
                    assert sock.family == socket.AF_UNIX
                    assert not {k for k in tls if k.endswith(("_secret", "_key", "_iv"))}
                    sock.sendall(b"x" * 100_000)
                    got = b""
                    while len(got) < 100_000:
                        got += sock.recv(65536)
                    assert got == b"x" * 100_000
                sock.close()
            finally:
                m.stop()
    finally:
        backend.stop()
