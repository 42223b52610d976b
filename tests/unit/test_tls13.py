"""The TLS 1.3 record layer: RFC 8448 known answers, our layer against itself, and against stock OpenSSL."""

from __future__ import annotations

import socket
import ssl
import struct
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tls_helpers import SUITE_NAMES, OpenSSLPeer, TlsEcho, echo_until_eof, server_context, session_pair

from coldstart_bench.measure.tls_certs import RunCertificates, make_run_certificates, openssl_path
from components import tls13, tls_pool


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# RFC 8448 §3 (simple 1-RTT handshake, TLS_AES_128_GCM_SHA256).
C_AP_SECRET = h("9e 40 64 6c e7 9a 7f 9d c0 5a f8 88 9b ce 65 52 87 5a fa 0b 06 df 00 87 f7 92 eb b7 c1 75 04 a5")
S_AP_SECRET = h("a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 32 82 04 b4 f4 4b fb 6b 3a 4b 4f 1f 3f cb 63 16 43")
C_AP_KEY, C_AP_IV = h("17 42 2d da 59 6e d5 d9 ac d8 90 e3 c6 3f 50 51"), h("5b 78 92 3d ee 08 57 90 33 e5 23 d9")
S_AP_KEY, S_AP_IV = h("9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56"), h("cf 78 2b 88 dd 83 54 9a ad f1 e9 84")
C_APP_RECORD = h(
    "17 03 03 00 43 a2 3f 70 54 b6 2c 94 d0 af fa fe 82 28 ba 55 cb ef ac ea 42 f9 14 aa 66 bc ab 3f 2b 98"
    "19 a8 a5 b4 6b 39 5b d5 4a 9a 20 44 1e 2b 62 97 4e 1f 5a 62 92 a2 97 70 14 bd 1e 3d ea e6 3a ee bb 21"
    "69 49 15 e4"
)
S_APP_RECORD = h(
    "17 03 03 00 43 2e 93 7e 11 ef 4a c7 40 e5 38 ad 36 00 5f c4 a4 69 32 fc 32 25 d0 5f 82 aa 1b 36 e3 0e"
    "fa f9 7d 90 e6 df fc 60 2d cb 50 1a 59 a8 fc c4 9c 4b f2 e5 f0 a2 1c 00 47 c2 ab f3 32 54 0d d0 32 e1"
    "67 c2 95 5d"
)
C_ALERT_RECORD = h("17 03 03 00 13 c9 87 27 60 65 56 66 b7 4d 7f f1 15 3e fd 6d b6 d0 b0 e3")
S_ALERT_RECORD = h("17 03 03 00 13 b5 8f d6 71 66 eb f5 99 d2 47 20 cf be 7e fa 7a 88 64 a9")
PAYLOAD = bytes(range(50))
AES128 = tls13.SUITES["TLS_AES_128_GCM_SHA256"]


# -- known answers ----------------------------------------------------------------------------


def test_rfc8448_traffic_keys() -> None:
    assert tls13.traffic_keys(C_AP_SECRET, AES128) == (C_AP_KEY, C_AP_IV)
    assert tls13.traffic_keys(S_AP_SECRET, AES128) == (S_AP_KEY, S_AP_IV)


def test_rfc8448_records_decrypt_at_their_sequence_numbers() -> None:
    client = tls13.Direction(AES128, C_AP_SECRET, 0, encrypt=False)
    assert client.open(C_APP_RECORD[:5], C_APP_RECORD[5:]) == (tls13.APPLICATION_DATA, PAYLOAD)
    assert client.open(C_ALERT_RECORD[:5], C_ALERT_RECORD[5:]) == (tls13.ALERT, b"\x01\x00")  # close_notify
    # The server's first application-key record was its NewSessionTicket (seq 0).
    server = tls13.Direction(AES128, S_AP_SECRET, 1, encrypt=False)
    assert server.open(S_APP_RECORD[:5], S_APP_RECORD[5:]) == (tls13.APPLICATION_DATA, PAYLOAD)
    assert server.open(S_ALERT_RECORD[:5], S_ALERT_RECORD[5:]) == (tls13.ALERT, b"\x01\x00")


def test_rfc8448_record_sealed_byte_for_byte() -> None:
    writer = tls13.Direction(AES128, C_AP_SECRET, 0, encrypt=True)
    assert writer.seal(tls13.APPLICATION_DATA, PAYLOAD) == C_APP_RECORD
    assert writer.seal(tls13.ALERT, b"\x01\x00") == C_ALERT_RECORD
    assert writer.seq == 2


def test_wrong_sequence_number_fails_authentication() -> None:
    server = tls13.Direction(AES128, S_AP_SECRET, 0, encrypt=False)  # off by one: the ticket not counted
    with pytest.raises(tls13.TLSRecordError, match="failed authentication") as info:
        server.open(S_APP_RECORD[:5], S_APP_RECORD[5:])
    assert info.value.alert == tls13.BAD_RECORD_MAC


def test_nonce_is_iv_xor_padded_sequence() -> None:
    iv = bytes(range(12))
    assert tls13.record_nonce(iv, 0) == iv
    assert tls13.record_nonce(iv, 0x0102) == iv[:10] + bytes([iv[10] ^ 1, iv[11] ^ 2])


def test_key_update_derives_a_new_secret_and_resets_the_sequence() -> None:
    d = tls13.Direction(AES128, C_AP_SECRET, 7, encrypt=True)
    d.update()
    assert d.seq == 0
    assert d.secret == tls13.hkdf_expand_label(C_AP_SECRET, "traffic upd", b"", 32, "sha256")
    assert d.key != C_AP_KEY


def test_meta_parsing_names_what_is_missing() -> None:
    with pytest.raises(tls13.TLSError, match="client_traffic_secret"):
        tls13.SessionParams.from_meta(
            {"version": "TLSv1.3", "cipher_suite": "TLS_AES_128_GCM_SHA256", "server_traffic_secret": "00" * 32}
        )
    with pytest.raises(tls13.TLSError, match=r"only TLS 1\.3"):
        tls13.SessionParams.from_meta({"version": "TLSv1.2"})
    with pytest.raises(tls13.TLSError, match=r"unsupported TLS 1\.3 cipher suite"):
        tls13.SessionParams.from_meta({"version": "TLSv1.3", "cipher_suite": "TLS_AES_128_CCM_SHA256"})


# -- our layer on both ends ------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITE_NAMES)
def test_session_pair_echo_and_key_updates_both_ways(suite: str) -> None:
    client, server = session_pair(suite)
    with client, server:
        client.sendall(b"ping")
        assert server.recv(100) == b"ping"
        # Server asks for an update: the client updates its read keys, answers, updates its write keys.
        server.key_update(request_peer=True)
        server.sendall(b"after server update")
        assert client.recv(100) == b"after server update"
        assert client.key_updates_received == 1 and client.key_updates_sent == 1
        client.sendall(b"client on new keys")
        assert server.recv(100) == b"client on new keys"
        assert server.key_updates_received == 1
        # And the other way, without a request: only one direction changes.
        client.key_update(request_peer=False)
        client.sendall(b"x")
        assert server.recv(1) == b"x"
        assert server.key_updates_received == 2 and server.key_updates_sent == 1


def test_tampered_record_is_rejected_and_the_connection_dropped() -> None:
    client, server = session_pair()
    record = bytearray(server.writer.seal(tls13.APPLICATION_DATA, b"genuine"))
    record[-20] ^= 0x01
    server.sock.sendall(record)
    with pytest.raises(tls13.TLSRecordError, match="failed authentication"):
        client.recv(100)
    assert client.closed and client.sock.fileno() == -1
    # The peer was told: a bad_record_mac alert under the client's keys.
    with pytest.raises(tls13.TLSAlertReceived, match="bad_record_mac"):
        server.recv(100)


def test_oversized_records_are_refused() -> None:
    client, server = session_pair()
    server.sock.sendall(struct.pack("!BHH", tls13.APPLICATION_DATA, 0x0303, tls13.MAX_CIPHERTEXT + 1))
    with pytest.raises(tls13.TLSRecordError, match="exceeds") as info:
        client.recv(1)
    assert info.value.alert == tls13.RECORD_OVERFLOW
    # A well-formed ciphertext whose plaintext is over 2^14.
    client, server = session_pair()
    inner = b"a" * (tls13.MAX_PLAINTEXT + 1) + bytes([tls13.APPLICATION_DATA])
    header = struct.pack("!BHH", tls13.APPLICATION_DATA, 0x0303, len(inner) + tls13.TAG_LEN)
    w = server.writer
    server.sock.sendall(header + w.aead.seal(tls13.record_nonce(w.iv, w.seq), header, inner))
    with pytest.raises(tls13.TLSRecordError, match="plaintext") as info:
        client.recv(1)
    assert info.value.alert == tls13.RECORD_OVERFLOW
    server.close()


def test_large_writes_are_split_into_full_size_records() -> None:
    client, server = session_pair()
    data = bytes(range(256)) * 160  # 40960 bytes
    client.sendall(data)
    lengths = []
    raw = b""
    while sum(lengths) + 0 < len(data):
        raw += server.sock.recv(65536)
        lengths, rest = [], raw
        while len(rest) >= 5:
            n = struct.unpack("!H", rest[3:5])[0]
            if len(rest) < 5 + n:
                break
            lengths.append(n - 1 - tls13.TAG_LEN)
            rest = rest[5 + n :]
    assert lengths == [tls13.MAX_PLAINTEXT, tls13.MAX_PLAINTEXT, len(data) - 2 * tls13.MAX_PLAINTEXT]


def test_alerts_close_notify_and_tickets() -> None:
    client, server = session_pair()
    # A NewSessionTicket fragmented over two records is reassembled and ignored.
    ticket = bytes([tls13.NEW_SESSION_TICKET]) + (20).to_bytes(3, "big") + b"t" * 20
    server.sock.sendall(
        server.writer.seal(tls13.HANDSHAKE, ticket[:10]) + server.writer.seal(tls13.HANDSHAKE, ticket[10:])
    )
    server.sendall(b"data")
    assert client.recv(10) == b"data" and client.tickets_seen == 1
    # close_notify reads as EOF.
    server.close()
    assert client.recv(10) == b""
    # A fatal alert is an error naming it.
    client, server = session_pair()
    server.sock.sendall(server.writer.seal(tls13.ALERT, bytes([2, 80])))
    with pytest.raises(tls13.TLSAlertReceived, match=r"internal_error \(80\)"):
        client.recv(10)
    assert client.closed
    # So is an unprotected one.
    client, server = session_pair()
    server.sock.sendall(bytes([tls13.ALERT, 3, 3, 0, 2, 2, 40]))
    with pytest.raises(tls13.TLSAlertReceived, match=r"handshake_failure .*unprotected"):
        client.recv(10)


def test_truncated_record_and_unexpected_content_type() -> None:
    client, server = session_pair()
    record = server.writer.seal(tls13.APPLICATION_DATA, b"hello")
    server.sock.sendall(record[:-3])
    server.sock.shutdown(socket.SHUT_WR)
    with pytest.raises(tls13.TLSRecordError, match="closed inside a TLS record"):
        client.recv(10)
    client, server = session_pair()
    server.sock.sendall(server.writer.seal(tls13.CHANGE_CIPHER_SPEC, b"\x01"))
    with pytest.raises(tls13.TLSRecordError, match="content type 20") as info:
        client.recv(10)
    assert info.value.alert == tls13.UNEXPECTED_MESSAGE


# -- against stock OpenSSL (Python's ssl) -------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunCertificates]:
    if openssl_path() is None:
        pytest.skip("the openssl command is not installed (needed to make the run's certificates)")
    yield make_run_certificates(tmp_path_factory.mktemp("certs"))


def _client_ctx(certs: RunCertificates, client_cert: bool = False) -> ssl.SSLContext:
    cfg = tls_pool.TlsPoolConfig("127.0.0.1", 0, "localhost", str(certs.ca_cert), None, None)
    if client_cert:
        cfg.cert_file, cfg.key_file = str(certs.client_cert), str(certs.client_key)
    return tls_pool.client_context(cfg)


def test_openssl_server_echo_tickets_and_our_close_notify(certs: RunCertificates) -> None:
    peer = OpenSSLPeer(server_context(certs, num_tickets=3), echo_until_eof, _client_ctx(certs))
    assert peer.handshake.version == "TLSv1.3"
    session = peer.session()
    for i in range(5):
        msg = f"message {i}".encode() * (i * 1000 + 1)
        session.sendall(msg)
        got = b""
        while len(got) < len(msg):
            got += session.recv(65536)
        assert got == msg
    assert session.tickets_seen == 3 and session.reader.seq >= 3 + 5  # echoes may span several records
    session.close()  # close_notify: the server's recv ends cleanly (no SSLEOFError)
    assert peer.join() == sum(len(f"message {i}".encode() * (i * 1000 + 1)) for i in range(5))


def test_openssl_answers_our_key_update_and_we_follow_its(certs: RunCertificates) -> None:
    peer = OpenSSLPeer(server_context(certs), echo_until_eof, _client_ctx(certs))
    session = peer.session()
    session.sendall(b"before")
    assert session.recv(10) == b"before"
    first_write, first_read = session.writer.secret, session.reader.secret
    session.key_update(request_peer=True)
    session.sendall(b"after")
    assert session.recv(10) == b"after"
    # OpenSSL updated its sending keys as asked, and we followed.
    assert session.key_updates_received == 1
    assert session.writer.secret != first_write and session.reader.secret != first_read
    session.close()
    peer.join()


def test_openssl_close_notify_reads_as_eof(certs: RunCertificates) -> None:
    def greet_and_close(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"bye")
        tls.unwrap()

    peer = OpenSSLPeer(server_context(certs), greet_and_close, _client_ctx(certs))
    session = peer.session()
    assert session.recv(10) == b"bye"
    assert session.recv(10) == b""
    session.close()
    peer.join()


def test_openssl_rejecting_our_missing_client_certificate_is_a_named_alert(certs: RunCertificates) -> None:
    ctx = server_context(certs, client_ca=certs.ca_cert)
    client_sock, server_sock = socket.socketpair()
    client_sock.settimeout(10)
    server_sock.settimeout(10)
    outcome: list[Any] = []

    def run() -> None:
        try:
            ctx.wrap_socket(server_sock, server_side=True)
            outcome.append("accepted")
        except ssl.SSLError as exc:
            outcome.append(exc.reason)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    hs = tls_pool.client_handshake(client_sock, _client_ctx(certs), "localhost")
    session = tls13.TLSSession(client_sock, tls13.SessionParams(hs.suite, hs.server_secret, hs.client_secret))
    with pytest.raises(tls13.TLSAlertReceived, match="certificate_required"):
        session.recv(10)
    t.join(10)
    assert outcome and outcome[0] != "accepted"


def test_mutual_tls_with_client_certificate(certs: RunCertificates) -> None:
    peer = OpenSSLPeer(server_context(certs, client_ca=certs.ca_cert), echo_until_eof, _client_ctx(certs, True))
    session = peer.session()
    session.sendall(b"mtls")
    assert session.recv(10) == b"mtls"
    session.close()
    peer.join()


@pytest.mark.parametrize("suite", SUITE_NAMES)
def test_every_suite_against_an_openssl_server_pinned_to_it(certs: RunCertificates, suite: str) -> None:
    server = TlsEcho(certs, ciphersuites=suite)
    try:
        sock, meta = tls_pool.open_session(
            {"target": server.target, "ca_file": str(certs.ca_cert), "server_name": "localhost"}
        )
        assert meta["tls"]["cipher_suite"] == suite
        handout = tls_pool.prepare_handout(sock, None)
        session = tls13.continue_session(sock, handout["tls"])
        assert session.suite.name == suite
        session.sendall(b"suite " + suite.encode())
        assert session.recv(100) == b"suite " + suite.encode()
        session.key_update(request_peer=True)
        session.sendall(b"rekeyed")
        assert session.recv(100) == b"rekeyed"
        session.close()
    finally:
        server.stop()
