"""What a cold function pays to continue an injected TLS session: the record keys arrive derived,
so it needs neither HKDF nor hmac/hashlib; a KeyUpdate still derives the next keys itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from components import tls13

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHILD = r"""
import json, socket, sys
from components import tls13
metas = json.loads(sys.stdin.read())
a, b = socket.socketpair()
client = tls13.continue_session(a, metas["client"])
server = tls13.continue_session(b, metas["server"])
client.sendall(b"over the continued session")
got = server.recv(100)
print(json.dumps({"got": got.decode(), "hmac": "hmac" in sys.modules, "_hashlib": "_hashlib" in sys.modules,
                  "ssl": "_ssl" in sys.modules, "ctypes": "ctypes" in sys.modules}))
"""


def _meta(suite: tls13.CipherSuite, read_secret: bytes, write_secret: bytes) -> dict[str, object]:
    rk, riv = tls13.traffic_keys(read_secret, suite)
    wk, wiv = tls13.traffic_keys(write_secret, suite)
    return {
        "version": "TLSv1.3",
        "cipher_suite": suite.name,
        "server_traffic_secret": read_secret.hex(),
        "client_traffic_secret": write_secret.hex(),
        "server_seq": 3,
        "client_seq": 1,
        "server_key": rk.hex(),
        "server_iv": riv.hex(),
        "client_key": wk.hex(),
        "client_iv": wiv.hex(),
    }


@pytest.mark.parametrize("suite_name", sorted(tls13.SUITES))
def test_a_continued_session_needs_no_hkdf_and_no_hashlib(suite_name: str) -> None:
    suite = tls13.SUITES[suite_name]
    c, s = os.urandom(suite.hash_len), os.urandom(suite.hash_len)
    client = _meta(suite, s, c)
    server = _meta(suite, c, s)  # the peer's view: reads what the client writes
    server["server_seq"], server["client_seq"] = 1, 3
    proc = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=json.dumps({"client": client, "server": server}),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out == {"got": "over the continued session", "hmac": False, "_hashlib": False, "ssl": False, "ctypes": False}


def test_keys_given_must_match_the_suite_and_go_in_pairs() -> None:
    suite = tls13.SUITES["TLS_AES_128_GCM_SHA256"]
    meta = _meta(suite, b"\x01" * 32, b"\x02" * 32)
    meta.pop("client_iv")
    with pytest.raises(tls13.TLSError, match="malformed"):
        tls13.SessionParams.from_meta(meta)
    meta = _meta(suite, b"\x01" * 32, b"\x02" * 32)
    meta["client_iv"] = "00" * 8
    with pytest.raises(tls13.TLSError, match="12-byte IV"):
        tls13.continue_session(None, meta)  # type: ignore[arg-type]


def test_a_key_update_after_given_keys_derives_the_next_generation() -> None:
    """Keys given, then a KeyUpdate: the next keys come from the secret (HKDF), as RFC 8446 §7.2 says."""
    import socket

    suite = tls13.SUITES["TLS_CHACHA20_POLY1305_SHA256"]
    c, s = os.urandom(32), os.urandom(32)
    a, b = socket.socketpair()
    client = tls13.continue_session(a, _meta(suite, s, c))
    server_meta = _meta(suite, c, s)
    server_meta["server_seq"], server_meta["client_seq"] = 1, 3
    server = tls13.continue_session(b, server_meta)
    client.key_update(request_peer=True)
    client.sendall(b"after the update")
    assert server.recv(100) == b"after the update"
    server.sendall(b"answered")  # the server answered the request with its own KeyUpdate first
    assert client.recv(100) == b"answered"
    assert (client.key_updates_sent, client.key_updates_received) == (1, 1)
    client.close()
    server.close()


def test_the_minimal_binding_and_ctypes_seal_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """The libcrypto calls through the _ctypes-only binding and through ctypes itself agree."""
    import ctypes

    lite = tls13._LibCrypto()
    monkeypatch.setattr(tls13, "_ctypes_binding", lambda: ctypes)
    full = tls13._LibCrypto()
    assert full.ctypes is ctypes and lite.ctypes is not ctypes
    nonce, aad, plaintext = os.urandom(12), b"header", os.urandom(100)
    for suite in tls13.SUITES.values():
        key = os.urandom(suite.key_len)
        sealed = {}
        for binding in (lite, full):
            monkeypatch.setattr(tls13._LibCrypto, "_instance", binding)
            sealed[id(binding)] = tls13.Aead(suite, key, True).seal(nonce, aad, plaintext)
        assert sealed[id(lite)] == sealed[id(full)]
        for binding in (lite, full):
            monkeypatch.setattr(tls13._LibCrypto, "_instance", binding)
            opener = tls13.Aead(suite, key, False)
            assert opener.open(nonce, aad, sealed[id(lite)]) == plaintext
            assert opener.open(nonce, aad, bytes([sealed[id(lite)][0] ^ 1]) + sealed[id(lite)][1:]) is None
