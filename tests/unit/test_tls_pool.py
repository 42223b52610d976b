"""The tls pool kind: configuration, verification, record accounting, kernel TLS packing, and the
manager handing TLS sessions to the function (secrets only to allowed callers, never in logs)."""

from __future__ import annotations

import gc
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_pool_manager_support import REPO, Echo, Manager, env, short_tmpdir, wait_for
from tls_helpers import TlsEcho, echo_until_eof, server_context

from coldstart_bench.measure.tls_certs import RunCertificates, make_run_certificates, openssl_path
from components import protocol, tls13, tls_pool

SECRET_HEX = re.compile(r"[0-9a-f]{64,}")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunCertificates]:
    if openssl_path() is None:
        pytest.skip("the openssl command is not installed (needed to make the run's certificates)")
    yield make_run_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tls_echo(certs: RunCertificates) -> Iterator[TlsEcho]:
    server = TlsEcho(certs)
    yield server
    server.stop()


def _config(certs: RunCertificates, target: str, **extra: object) -> dict[str, object]:
    return {"target": target, "ca_file": str(certs.ca_cert), "server_name": "localhost", **extra}


# -- configuration and verification --------------------------------------------------------------


def test_config_errors_are_readable(certs: RunCertificates) -> None:
    with pytest.raises(tls_pool.TlsSessionError, match="needs 'target'"):
        tls_pool.parse_config({})
    with pytest.raises(tls_pool.TlsSessionError, match="not a readable file"):
        tls_pool.parse_config({"target": "h:1", "ca_file": "/nonexistent/ca.pem"})
    with pytest.raises(tls_pool.TlsSessionError, match="key_file given without cert_file"):
        tls_pool.parse_config({"target": "h:1", "key_file": str(certs.client_key)})
    with pytest.raises(tls_pool.TlsSessionError, match="cannot be turned off"):
        tls_pool.parse_config({"target": "h:1", "verify": False})
    with pytest.raises(tls_pool.TlsSessionError, match="ktls must be one of"):
        tls_pool.parse_config({"target": "h:1", "ktls": "maybe"})
    cfg = tls_pool.parse_config({"target": "db.example:5433"})
    assert (cfg.host, cfg.port, cfg.server_name, cfg.ktls) == ("db.example", 5433, "db.example", "auto")


def test_server_verification_failures(certs: RunCertificates, tls_echo: TlsEcho, tmp_path: Path) -> None:
    with pytest.raises(tls_pool.TlsSessionError, match=r"certificate rejected.*mismatch"):
        tls_pool.open_session(_config(certs, tls_echo.target, server_name="not-the-server.example"))
    other = make_run_certificates(tmp_path / "other")
    with pytest.raises(tls_pool.TlsSessionError, match=r"certificate rejected.*unable to get local issuer"):
        tls_pool.open_session({"target": tls_echo.target, "ca_file": str(other.ca_cert), "server_name": "localhost"})
    assert tls_echo.stats()["tls_sessions"] == 0


def test_mutual_tls(certs: RunCertificates) -> None:
    server = TlsEcho(certs, client_ca=certs.ca_cert)
    try:
        # Without a client certificate the server's alert arrives right after the handshake.
        with pytest.raises(tls_pool.TlsSessionError, match="certificate_required"):
            tls_pool.open_session(_config(certs, server.target))
        sock, meta = tls_pool.open_session(
            _config(certs, server.target, cert_file=str(certs.client_cert), key_file=str(certs.client_key))
        )
        assert meta["tls"]["client_cert"] is True
        session = tls13.continue_session(sock, tls_pool.prepare_handout(sock)["tls"])
        session.sendall(b"mutual")
        assert session.recv(10) == b"mutual"
        session.close()
        assert server.stats()["tls_sessions"] == 1
    finally:
        server.stop()


# -- sessions in the pool -------------------------------------------------------------------------


def test_tickets_are_counted_before_hand_out_and_secrets_only_in_the_handout_meta(
    certs: RunCertificates, tls_echo: TlsEcho
) -> None:
    sock, meta = tls_pool.open_session(_config(certs, tls_echo.target))
    assert not SECRET_HEX.search(json.dumps(meta)), "the open/log meta must not carry secrets"
    assert not SECRET_HEX.search(json.dumps(tls_pool.session_meta(sock)))
    assert tls_pool.quick_check(sock) is True
    # The server's two tickets may arrive in separate segments, late on a busy machine: account
    # until both have been read (no timing assumption; the records are consumed as they arrive).
    state = tls_pool._state(sock)
    assert state is not None
    wait_for(lambda: tls_pool.check_session(sock) and state.session.tickets_seen >= 2, timeout=30)
    handout = tls_pool.prepare_handout(sock, None)
    tls = handout["tls"]
    # Python's ssl server sends two session tickets; both were read and counted here.
    assert (tls["server_seq"], tls["client_seq"], tls["tickets"]) == (2, 0, 2)
    assert tls["path"] == "record_layer" and tls["version"] == "TLSv1.3"
    suite = tls13.suite_by_name(tls["cipher_suite"])
    assert len(bytes.fromhex(tls["server_traffic_secret"])) == suite.hash_len
    # The derived record keys travel too (the receiver skips HKDF); they match the secrets.
    for side in ("client", "server"):
        key, iv = tls13.traffic_keys(bytes.fromhex(tls[f"{side}_traffic_secret"]), suite)
        assert (tls[f"{side}_key"], tls[f"{side}_iv"]) == (key.hex(), iv.hex())
    # The socket holds nothing the receiver cannot read: it continues at the right numbers.
    session = tls13.continue_session(sock, tls)
    session.sendall(b"continued")
    assert session.recv(100) == b"continued"
    session.close()


def test_closed_session_fails_the_health_check(certs: RunCertificates) -> None:
    server = TlsEcho(certs)
    sock, _meta = tls_pool.open_session(_config(certs, server.target))
    server.stop()  # closes every connection
    wait_for(lambda: not tls_pool.check_session(sock), timeout=5)
    with pytest.raises(tls_pool.TlsSessionError, match="unfit"):
        tls_pool.prepare_handout(sock)
    tls_pool.close_session(sock)
    assert sock.fileno() == -1


# -- kernel TLS -------------------------------------------------------------------------------------


def test_ktls_detection(tmp_path: Path) -> None:
    ulp = tmp_path / "tcp_available_ulp"
    ulp.write_text("mptcp\n")
    assert not tls_pool.ktls_available(str(ulp))
    ulp.write_text("mptcp tls\n")
    assert tls_pool.ktls_available(str(ulp))
    assert not tls_pool.ktls_available(str(tmp_path / "absent"))


@pytest.mark.parametrize(
    ("suite", "cipher_type", "size"),
    [("TLS_AES_128_GCM_SHA256", 51, 40), ("TLS_AES_256_GCM_SHA384", 52, 56), ("TLS_CHACHA20_POLY1305_SHA256", 54, 56)],
)
def test_ktls_crypto_info_packing(suite: str, cipher_type: int, size: int) -> None:
    s = tls13.suite_by_name(suite)
    key, iv = bytes(range(1, s.key_len + 1)), bytes(range(100, 112))
    info = tls_pool.ktls_crypto_info(suite, key, iv, seq=0x0102030405060708)
    assert len(info) == size  # sizeof(struct tls12_crypto_info_*)
    version, ctype = struct.unpack_from("=HH", info)
    assert (version, ctype) == (0x0304, cipher_type)
    if suite == "TLS_CHACHA20_POLY1305_SHA256":
        assert info[4:16] == iv and info[16:48] == key  # no salt: the whole 12-byte IV
    else:
        # struct order: iv (the IV's last 8 bytes), key, salt (its first 4), rec_seq
        assert info[4:12] == iv[4:] and info[12 : 12 + s.key_len] == key
        assert info[12 + s.key_len : 16 + s.key_len] == iv[:4]
    assert info[-8:] == bytes(range(1, 9))
    with pytest.raises(tls13.TLSError, match="sizes"):
        tls_pool.ktls_crypto_info(suite, key[:-1], iv, 0)


def test_ktls_on_without_the_ulp_refuses_and_auto_uses_the_record_layer(
    certs: RunCertificates, tls_echo: TlsEcho
) -> None:
    if tls_pool.ktls_available():
        pytest.skip("this kernel has the tls ULP; the refusal path cannot be shown")
    sock, _ = tls_pool.open_session(_config(certs, tls_echo.target, ktls="on"))
    with pytest.raises(tls_pool.TlsSessionError, match="no tls ULP"):
        tls_pool.prepare_handout(sock)
    tls_pool.close_session(sock)
    sock, _ = tls_pool.open_session(_config(certs, tls_echo.target))
    assert tls_pool.prepare_handout(sock)["tls"]["path"] == "record_layer"
    tls_pool.close_session(sock)


# -- the manager serving a TLS backend it did not start --------------------------------------------


def _function(sock_path: str, *extra: str) -> dict[str, object]:
    args = [sys.executable, "-m", "components.function", "--socket", sock_path, "--pool", "tls"]
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
    assert (proc.returncode == 0) == bool(record["ok"]), proc.stderr
    return record


def _acquire_as_nobody(sock_path: str) -> bytes:
    """The raw reply a caller of another uid gets (root forks and drops to nobody)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            os.close(r)
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(sock_path)
            s.sendall(protocol.encode_request("acquire", pool="tls"))
            data, anc, _flags, _addr = s.recvmsg(65536, socket.CMSG_SPACE(16))
            os.write(w, (b"FD " if anc else b"") + data)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    got = os.read(r, 65536)
    os.close(r)
    assert os.waitstatus_to_exitcode(status) == 0
    return got


def test_manager_hands_tls_sessions_to_the_function_and_secrets_stay_private(
    certs: RunCertificates, tls_echo: TlsEcho
) -> None:
    with short_tmpdir() as d:
        os.chmod(d, 0o755)
        cfg = d / "cpm.json"
        cfg.write_text(json.dumps({"pools": {"tls": {"kind": "tls", **_config(certs, tls_echo.target)}}}))
        sock_path = str(d / "pool.sock")
        m = Manager(Path(sock_path), tls_echo.target, 2, "--config", str(cfg), "--pool", "tls", "--socket-mode", "0666")
        try:
            # The cold function continues an injected session and verifies the echo through it.
            records = [_function(sock_path, "--mode", "socket") for _ in range(2)]
            for rec in records:
                assert rec["ok"] is True and rec["path"] == "socket", rec
                assert rec["tls_path"] == "record_layer" and rec["tls_version"] == "TLSv1.3"
                assert rec["tls_server_seq"] == 2 and rec["tls_client_seq"] == 0
            direct_extra = ["--tls-ca", str(certs.ca_cert), "--tls-server-name", "localhost"]
            direct = _function(sock_path, "--mode", "direct", "--target", tls_echo.target, *direct_extra)
            assert direct["ok"] is True and direct["tls_path"] == "handshake", direct
            for key in ("ssl_import_us", "tls_context_us", "tls_handshake_us"):
                assert isinstance(direct[key], float) and direct[key] > 0
            # Sessions the test takes itself: their secrets are what must appear nowhere else.
            secrets = []
            for _ in range(2):
                sock, reply = protocol.acquire(sock_path, "tls")
                tls = reply["meta"]["tls"]
                secrets += [tls["client_traffic_secret"], tls["server_traffic_secret"]]
                secrets += [tls[f"{side}_{part}"] for side in ("client", "server") for part in ("key", "iv")]
                session = tls13.continue_session(sock, tls)
                session.sendall(b"mine")
                assert session.recv(10) == b"mine"
                session.close()
            if os.getuid() == 0:
                denied = _acquire_as_nobody(sock_path)
                assert not denied.startswith(b"FD "), "a denied caller must get no fd"
                assert json.loads(denied)["error"] == "forbidden"
                assert not SECRET_HEX.search(denied.decode())
            stats = m.stats()
            pool = stats["pools"]["tls"]
            assert pool["handed_out"] == 4
            # One TLS session at the backend per session the manager opened, plus the direct one.
            wait_for(lambda: tls_echo.stats()["tls_sessions"] == m.stats()["pools"]["tls"]["refills"] + 1, timeout=30)
            stats_text = json.dumps(m.stats())
        finally:
            m.stop()
        logs = m.logs()
        written = "".join(p.read_text(errors="replace") for p in d.rglob("*") if p.is_file())
        echo_out = tls_echo.stats()
        for where, text in (
            ("manager log", logs),
            ("stats reply", stats_text),
            ("files", written),
            ("function output", json.dumps([*records, direct])),
            ("echo stats", json.dumps(echo_out)),
        ):
            for secret in secrets:
                assert secret not in text, f"a traffic secret, key or IV appears in the {where}"
            assert not SECRET_HEX.search(text), f"something secret-shaped appears in the {where}"
        assert '"event":"grant"' in logs
        if os.getuid() == 0:
            assert stats["denied"] == 1


def test_function_without_tls_meta_fails_clearly(certs: RunCertificates, tls_echo: TlsEcho) -> None:
    # A plain tcp pool to the TLS backend: the reply has no meta.tls, the function says so.
    with short_tmpdir() as d:
        m = Manager(d / "pool.sock", tls_echo.target, 1, "--pool", "tls")
        try:
            rec = _function(m.sock_path, "--mode", "socket")
        finally:
            m.stop(signal.SIGTERM)
    assert rec["ok"] is False and "meta.tls missing" in str(rec["error"])


# -- the manager's hand-out hook --------------------------------------------------------------------

HOOK_KIND = """
import socket
import threading

_lock = threading.Lock()
_count = [0]


def open_session(config):
    host, port = config["target"].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=2)
    sock.settimeout(None)
    return sock, {"opened": True}


def check_session(sock):
    return True


def quick_check(sock):
    return True


def prepare_handout(sock, session):
    with _lock:
        _count[0] += 1
        n = _count[0]
    if n == 1:
        raise RuntimeError("first session refused at hand-out")
    return {"opened": True, "prepared": n}
"""


def test_prepare_handout_hook_adds_meta_and_a_failure_discards_the_session(echo: Echo) -> None:
    target = echo.target
    with short_tmpdir() as d:
        (d / "hookkind.py").write_text(HOOK_KIND)
        cfg = {"pools": {"hook": {"kind": "hook", "module": "hookkind", "target": target, "size": 2}}}
        (d / "cfg.json").write_text(json.dumps(cfg))
        old = os.environ.get("PYTHONPATH", "")
        os.environ["PYTHONPATH"] = str(d) + (os.pathsep + old if old else "")
        try:
            m = Manager(d / "m.sock", target, 2, "--config", str(d / "cfg.json"), "--pool", "hook")
        finally:
            os.environ["PYTHONPATH"] = old
        try:
            sock, reply = protocol.acquire(m.sock_path, "hook")
            sock.close()
            # The first session failed its hook and was discarded; the caller got the next one.
            assert reply["meta"] == {"opened": True, "prepared": 2}
            assert m.stats()["pools"]["hook"]["discard_health"] == 1
            events = wait_for(lambda: [e for e in m.log_events() if e.get("reason") == "prepare_handout"], timeout=3)
            assert "refused at hand-out" in events[0]["error"]
        finally:
            m.stop()


def test_session_state_goes_with_the_socket(certs: RunCertificates, tls_echo: TlsEcho) -> None:
    sock, _ = tls_pool.open_session(_config(certs, tls_echo.target))
    tls_pool.prepare_handout(sock)
    # This session's own state, watched by a weak reference: other tests' sessions collected by
    # the same gc pass do not change what is checked.
    state = weakref.ref(tls_pool._SESSIONS[sock])
    sock.close()
    del sock
    gc.collect()
    assert state() is None  # the manager's copy of the keys is gone with its socket


def test_function_and_echo_flags_are_checked(certs: RunCertificates) -> None:
    from components import function

    with pytest.raises(ValueError, match="--transport must be tcp or tls"):
        function._parse(["--mode", "socket", "--transport", "udp"])
    with pytest.raises(ValueError, match="--release is not available"):
        function._parse(["--mode", "socket", "--transport", "tls", "--release"])
    opts = function._parse(["--mode", "direct", "--transport", "tls", "--tls-ca", "ca.pem", "--tls-server-name", "db"])
    assert (opts["transport"], opts["tls_ca"], opts["tls_server_name"]) == ("tls", "ca.pem", "db")
    args = [sys.executable, "-m", "components.echo_server", "--port", "0", "--tls-cert", str(certs.server_cert)]
    proc = subprocess.run(args, capture_output=True, text=True, env=env(), cwd=REPO, timeout=30)
    assert proc.returncode == 2 and "go together" in proc.stderr


def test_tls_echo_prints_its_count_at_exit(certs: RunCertificates) -> None:
    server = TlsEcho(certs)
    sock, _ = tls_pool.open_session(_config(certs, server.target))
    tls_pool.close_session(sock)
    # The server counts a session once it has read the client's Finished: on a busy machine that
    # can be after the client is done. Wait for it (bounded), then ask for the count at exit.
    wait_for(lambda: server.stats()["tls_sessions"] == 1, timeout=30, interval=0.1)
    server.proc.send_signal(signal.SIGTERM)
    out, _ = server.proc.communicate(timeout=60)
    server.stop()
    last = json.loads(out.decode().strip().splitlines()[-1])
    assert last["event"] == "stats" and last["tls_sessions"] == 1


def test_application_bytes_decrypted_by_the_manager_reach_the_receiver(certs: RunCertificates) -> None:
    """A server that speaks first (a banner): the manager consumes the record while accounting
    and hands the plaintext over in meta.tls, so the receiver reads it first."""
    listener = socket.create_server(("127.0.0.1", 0))
    ctx = server_context(certs)
    done: list[int] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"220 banner\n")
            done.append(echo_until_eof(tls))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        target = f"127.0.0.1:{listener.getsockname()[1]}"
        sock, _ = tls_pool.open_session(_config(certs, target))
        state = tls_pool._state(sock)
        assert state is not None
        wait_for(lambda: tls_pool.check_session(sock) and state.session.pending() > 0, timeout=5)
        tls = tls_pool.prepare_handout(sock)["tls"]
        assert bytes.fromhex(tls["plaintext"]) == b"220 banner\n"
        assert tls["server_seq"] == 3  # two tickets and the banner
        session = tls13.continue_session(sock, tls)
        assert session.recv(100) == b"220 banner\n"
        session.sendall(b"after banner")
        assert session.recv(100) == b"after banner"
        session.close()
        t.join(5)
        assert done == [len(b"after banner")]
    finally:
        listener.close()


def test_key_log_without_memfd_leaves_no_file(
    certs: RunCertificates, tls_echo: TlsEcho, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_memfd(*_args: object) -> int:
        raise OSError(38, "memfd_create not available")

    monkeypatch.setattr(tls_pool.os, "memfd_create", no_memfd)
    base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
    before = set(base.glob("cpm-tls-*"))
    sock, _ = tls_pool.open_session(_config(certs, tls_echo.target))
    assert set(base.glob("cpm-tls-*")) == before  # the private directory went at once
    session = tls13.continue_session(sock, tls_pool.prepare_handout(sock)["tls"])
    session.sendall(b"fallback key log")
    assert session.recv(100) == b"fallback key log"
    session.close()
