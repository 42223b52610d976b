"""Inside the kernel-TLS VM (``coldstart_bench.ktls_vm``): prove and time the kernel TLS hand-out.

Runs as the guest's only program after ``/init`` loaded the ``tls`` module, and prints one line,
``@@KTLSVM {json}``, on the console. What it starts, all on the guest's loopback:

* three ``components.echo_server`` TLS 1.3 backends, each pinned to one cipher suite through an
  OpenSSL config file (Python's ``ssl`` has no TLS 1.3 suite setting);
* three scripted TLS 1.3 servers (threads here) that answer the first request with a
  close_notify, a fatal alert, or a KeyUpdate followed by a reply under the new keys;
* one ``components.pool_manager`` with a ``tls`` pool (``"ktls": "on"``) per backend;
* cold ``python3 -m components.function`` processes continuing the handed-out sessions.

Checks (each names what it saw, so a failure explains itself): the echo through kernel TLS for
AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305; the server's session tickets consumed by the
manager before hand-out (sequence number 2, first record the function reads is data); close_notify
and an alert as named function errors; a KeyUpdate reported as one, and the raw socket after it
failing with EBADMSG rather than returning data; no libcrypto/libssl in the function's
``/proc/self/maps``. Negatives that show the checks can fail: a session installed with a wrong
read sequence number fails the echo; a function that handshakes itself does map libcrypto.

Figures (``plan["figures"]`` = N > 0): N cold starts each of a function continuing a kernel TLS
session and one importing ``ssl`` and handshaking, interleaved; medians of their phases.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

RESULT_MARK = "@@KTLSVM "
ROOT = Path(__file__).resolve().parent.parent
SUITES = {
    "aes128": "TLS_AES_128_GCM_SHA256",
    "aes256": "TLS_AES_256_GCM_SHA384",
    "chacha": "TLS_CHACHA20_POLY1305_SHA256",
}
SCRIPTS = ("close_notify", "alert", "key_update")
CRYPTO_LIBS = ("libcrypto", "libssl")
# Runs components.function in this very process and reports its mapped libraries at exit.
MAPS_WRAPPER = (
    "import atexit, sys\n"
    "def _maps():\n"
    "    with open('/proc/self/maps') as fh:\n"
    "        libs = sorted({l.split()[-1] for l in fh if '.so' in l})\n"
    "    sys.stderr.write('MAPS ' + ' '.join(libs) + '\\n')\n"
    "atexit.register(_maps)\n"
    "import runpy\n"
    "sys.argv[0] = 'components.function'\n"
    "runpy.run_module('components.function', run_name='__main__', alter_sys=True)\n"
)
TIMEOUT_S = 60.0  # software emulation: every step is slow, none may hang


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _read_json_line(proc: subprocess.Popen[bytes], what: str) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"{what} exited before it was ready (rc {proc.poll()})")
    return dict(json.loads(line))


# -- backends -------------------------------------------------------------------------------------


def start_echo_servers(certs: Path) -> tuple[dict[str, int], list[subprocess.Popen[bytes]]]:
    """One components.echo_server per suite; returns suite key -> port."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for key, suite in SUITES.items():
        conf = Path(f"/tmp/openssl-{key}.cnf")
        conf.write_text(
            "openssl_conf = openssl_init\n[openssl_init]\nssl_conf = ssl_sect\n[ssl_sect]\n"
            "system_default = system_default_sect\n[system_default_sect]\n"
            f"Ciphersuites = {suite}\n"
        )
        args = [sys.executable, "-m", "components.echo_server", "--host", "127.0.0.1", "--port", "0"]
        args += ["--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key")]
        procs[key] = subprocess.Popen(args, stdout=subprocess.PIPE, env=_env(OPENSSL_CONF=str(conf)), cwd=ROOT)
    ports = {key: int(_read_json_line(proc, f"echo server {key}")["port"]) for key, proc in procs.items()}
    return ports, list(procs.values())


class ScriptedServer:
    """A TLS 1.3 server (Python ``ssl`` handshake, no session tickets) whose session then goes on in
    ``components.tls13``'s record layer, so it can answer the first request with ``behaviour``."""

    def __init__(self, certs: Path, behaviour: str) -> None:
        self.certs, self.behaviour = certs, behaviour
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.errors: list[str] = []
        self.served = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        import ssl

        from components import tls13, tls_pool

        conn.settimeout(TIMEOUT_S)
        try:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            ctx.num_tickets = 0  # the record layer below starts at sequence number 0
            ctx.load_cert_chain(str(self.certs / "server.pem"), str(self.certs / "server.key"))
            keylog = tls_pool._KeyLog()
            keylog.attach(ctx)
            try:
                tls = ctx.wrap_socket(conn, server_side=True)
                secrets = keylog.secrets()
            finally:
                keylog.close(ctx)
            cipher = tls.cipher()
            suite = tls13.suite_by_name(cipher[0] if cipher else "")
            raw = socket.socket(fileno=os.dup(tls.fileno()))
            raw.settimeout(None)  # a session the pool keeps idle waits for its request as long as it takes
            params = tls13.SessionParams(
                suite, secrets["CLIENT_TRAFFIC_SECRET_0"][1], secrets["SERVER_TRAFFIC_SECRET_0"][1]
            )
            session = tls13.TLSSession(raw, params)
            request = session.recv(65536)
            raw.settimeout(TIMEOUT_S)
            self.served += 1
            if self.behaviour == "close_notify":
                session.close()
            elif self.behaviour == "alert":
                raw.sendall(session.writer.seal(tls13.ALERT, bytes([2, 80])))  # fatal internal_error
            elif self.behaviour == "key_update":
                session.key_update(request_peer=True)
                session.sendall(request)  # under the new keys
            with contextlib.suppress(OSError, tls13.TLSError):
                raw.settimeout(5)
                raw.recv(1)  # until the client gives up
            raw.close()
            tls.close()
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            conn.close()


# -- pool manager ---------------------------------------------------------------------------------


class Manager:
    def __init__(self, pools: dict[str, dict[str, Any]]) -> None:
        self.socket = "/run/cpm/pool.sock"
        os.makedirs("/run/cpm", exist_ok=True)
        config = {"socket": self.socket, "pools": pools}
        Path("/tmp/cpm.json").write_text(json.dumps(config))
        self.log = open("/tmp/cpm.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "components.pool_manager", "--config", "/tmp/cpm.json", "--log-grants", "none"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=_env(),
            cwd=ROOT,
        )

    def stats(self) -> dict[str, Any]:
        from components import protocol

        return protocol.request(self.socket, "stats", timeout=TIMEOUT_S)

    def wait_idle(self, pools: list[str], minimum: int = 1) -> None:
        deadline = time.monotonic() + TIMEOUT_S * 3
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pool manager exited ({self.proc.returncode}): {self.tail()}")
            with contextlib.suppress(OSError, Exception):
                last = self.stats()["pools"]
                if all(last[p]["idle"] >= minimum for p in pools):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"pools not ready: {json.dumps(last)[:600]}; log: {self.tail()}")

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return Path("/tmp/cpm.log").read_text(errors="replace")[-1500:]
        return ""

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.log.close()


# -- functions ------------------------------------------------------------------------------------


def run_function(args: list[str], with_maps: bool = False) -> dict[str, Any]:
    """One cold function process; its JSON record plus ``spawn_ns`` (and ``maps`` if asked)."""
    command = [sys.executable, "-c", MAPS_WRAPPER] if with_maps else [sys.executable, "-m", "components.function"]
    spawn_ns = time.time_ns()
    proc = subprocess.run(
        [*command, *args], capture_output=True, env=_env(), cwd=ROOT, timeout=TIMEOUT_S * 2, check=False
    )
    lines = proc.stdout.decode(errors="replace").strip().splitlines()
    try:
        rec = dict(json.loads(lines[-1]))
    except (IndexError, json.JSONDecodeError):
        rec = {"ok": False, "error": f"no record (rc {proc.returncode}): {proc.stderr.decode(errors='replace')[-500:]}"}
    rec["spawn_ns"] = spawn_ns
    for line in proc.stderr.decode(errors="replace").splitlines():
        if line.startswith("MAPS "):
            rec["maps"] = line[5:].split()
    return rec


def socket_args(manager: Manager, pool: str) -> list[str]:
    return ["--mode", "socket", "--socket", manager.socket, "--pool", pool, "--transport", "tls"]


COMMON_ARGS = ["--no-fallback", "--no-prefetch", "--timeout", str(TIMEOUT_S)]


def crypto_mapped(rec: dict[str, Any]) -> list[str]:
    return [lib for lib in rec.get("maps", []) if any(name in os.path.basename(lib) for name in CRYPTO_LIBS)]


# -- checks ---------------------------------------------------------------------------------------


def check_echo(manager: Manager, key: str) -> dict[str, Any]:
    rec = run_function([*socket_args(manager, f"ktls-{key}"), *COMMON_ARGS], with_maps=True)
    mapped = crypto_mapped(rec)
    ok = (
        rec.get("ok") is True
        and rec.get("tls_path") == "ktls"
        and rec.get("tls_cipher_suite") == SUITES[key]
        and bool(rec.get("maps"))
        and not mapped
    )
    return {
        "ok": ok,
        "suite": rec.get("tls_cipher_suite"),
        "path": rec.get("tls_path"),
        "error": rec.get("error"),
        "server_seq": rec.get("tls_server_seq"),
        "crypto_mapped": mapped,
        "maps_seen": len(rec.get("maps", [])),
        "connect_us": rec.get("connect_us"),
    }


def check_tickets(manager: Manager) -> dict[str, Any]:
    """A session taken from the pool here: the two tickets the OpenSSL backend sends right after the
    handshake were consumed by the manager, so the first record read is the echo itself."""
    from components import protocol

    sock, reply = protocol.acquire(manager.socket, "ktls-aes128", timeout=TIMEOUT_S)
    tls = (reply.get("meta") or {}).get("tls") or {}
    sock.settimeout(TIMEOUT_S)
    try:
        sock.sendall(b"ticket check\n")
        data, ancdata, _flags, _addr = sock.recvmsg(65536, socket.CMSG_SPACE(1))
        from components.ktls_socket import record_type

        first = record_type(ancdata)
    finally:
        sock.close()
    ok = tls.get("tickets") == 2 and tls.get("server_seq") == 2 and first == 23 and data == b"ticket check\n"
    return {
        "ok": ok,
        "tickets_consumed": tls.get("tickets"),
        "server_seq": tls.get("server_seq"),
        "first_record_type": first,
        "echoed": data == b"ticket check\n",
        "secrets_in_reply": any(k in tls for k in ("client_traffic_secret", "server_traffic_secret", "client_key")),
    }


def check_scripted(manager: Manager, behaviour: str, expect: tuple[str, ...]) -> dict[str, Any]:
    rec = run_function([*socket_args(manager, f"script-{behaviour}"), *COMMON_ARGS])
    error = rec.get("error") or ""
    ok = rec.get("ok") is False and rec.get("tls_path") == "ktls" and all(word in error for word in expect)
    return {"ok": ok, "function_ok": rec.get("ok"), "error": error, "path": rec.get("tls_path")}


def check_key_update_raw(manager: Manager) -> dict[str, Any]:
    """After the KeyUpdate record, the next record (sealed with the server's new keys) must fail
    to authenticate in the kernel: never returned as data."""
    from components import protocol
    from components.ktls_socket import record_type

    sock, _reply = protocol.acquire(manager.socket, "script-key_update", timeout=TIMEOUT_S)
    sock.settimeout(TIMEOUT_S)
    seen: list[Any] = []
    outcome = "no error"
    try:
        sock.sendall(b"rekey check\n")
        for _ in range(3):
            try:
                data, ancdata, _flags, _addr = sock.recvmsg(65536, socket.CMSG_SPACE(1))
            except OSError as exc:
                outcome = errno.errorcode.get(exc.errno or 0, str(exc))
                break
            seen.append([record_type(ancdata), data[:1].hex()])
            if not data:
                outcome = "eof"
                break
    finally:
        sock.close()
    ok = bool(seen) and seen[0] == [22, "18"] and outcome == "EBADMSG"
    return {"ok": ok, "records": seen, "after_key_update": outcome}


def check_wrong_sequence(port: int, certs: Path) -> dict[str, Any]:
    """Negative control: the same hand-out installed with the read sequence number off by one
    fails the echo (and with the right one, on the same kind of session, it succeeds)."""
    from types import SimpleNamespace

    from components import tls_pool
    from components.ktls_socket import KernelTlsSocket

    outcomes = {}
    for label, skew in (("right", 0), ("wrong", 1)):
        config = {"target": f"127.0.0.1:{port}", "server_name": "localhost", "ca_file": str(certs / "ca.pem")}
        sock, _meta = tls_pool.open_session(config)
        try:
            state = tls_pool._state(sock)
            assert state is not None and tls_pool.check_session(sock)
            session = state.session
            reader = SimpleNamespace(key=session.reader.key, iv=session.reader.iv, seq=session.reader.seq + skew)
            tls_pool.install_ktls(sock, session.suite.name, session.writer, reader)  # type: ignore[arg-type]
            ktls = KernelTlsSocket(sock)
            ktls.settimeout(TIMEOUT_S)
            ktls.sendall(b"sequence check\n")
            got = ktls.recv(100)
            outcomes[label] = "echo" if got == b"sequence check\n" else f"data {got[:20]!r}"
        except Exception as exc:
            outcomes[label] = f"{type(exc).__name__}: {exc}"
        finally:
            sock.close()
    ok = outcomes["right"] == "echo" and "EBADMSG" in outcomes["wrong"]
    return {"ok": ok, **outcomes}


def check_direct_maps(port: int, certs: Path) -> dict[str, Any]:
    """Negative control for the maps check: a function that handshakes itself maps libcrypto."""
    args = ["--mode", "direct", "--target", f"127.0.0.1:{port}", "--transport", "tls"]
    args += ["--tls-ca", str(certs / "ca.pem"), "--tls-server-name", "localhost"]
    rec = run_function([*args, *COMMON_ARGS], with_maps=True)
    mapped = crypto_mapped(rec)
    return {"ok": rec.get("ok") is True and bool(mapped), "crypto_mapped": mapped, "error": rec.get("error")}


# -- figures --------------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def phases(rec: dict[str, Any]) -> dict[str, float]:
    """The cold start split as the function reports it (library load / acquire / session set-up /
    first request, µs), plus the interpreter start before its ``main`` and the totals."""
    interpreter = (rec["t_main_ns"] - rec["spawn_ns"]) / 1000
    first = rec.get("first_request_us") or rec.get("request_rtt_us") or 0.0
    after_start = (rec.get("connect_us") or 0.0) + first
    if rec.get("t_first_reply_ns"):
        after_start = (rec["t_first_reply_ns"] - rec["t_main_ns"]) / 1000
    return {
        "interpreter_us": interpreter,
        "library_load_us": rec.get("library_load_us") or 0.0,
        "acquire_us": rec.get("acquire_us") or 0.0,
        "session_setup_us": rec.get("session_setup_us") or 0.0,
        "first_request_us": first,
        "after_start_us": after_start,  # from the function's main to its first reply
        "to_first_reply_us": interpreter + after_start,
    }


def figures(manager: Manager, port: int, certs: Path, n: int, mapped: dict[str, bool]) -> dict[str, Any]:
    direct = ["--mode", "direct", "--target", f"127.0.0.1:{port}", "--transport", "tls"]
    direct += ["--tls-ca", str(certs / "ca.pem"), "--tls-server-name", "localhost", *COMMON_ARGS]
    arms: dict[str, list[dict[str, float]]] = {"tls-ktls": [], "tls-direct": []}
    failures: list[str] = []
    for i in range(n):
        order = ("tls-ktls", "tls-direct") if i % 2 == 0 else ("tls-direct", "tls-ktls")
        for arm in order:
            if arm == "tls-ktls":
                manager.wait_idle(["fig-aes128"])
                rec = run_function([*socket_args(manager, "fig-aes128"), *COMMON_ARGS])
                good = rec.get("ok") is True and rec.get("tls_path") == "ktls"
            else:
                rec = run_function(direct)
                good = rec.get("ok") is True and rec.get("tls_path") == "handshake"
            if good:
                arms[arm].append(phases(rec))
            else:
                failures.append(f"{arm}: {rec.get('error')}")
    out: dict[str, Any] = {"n": n, "arms": {}, "failures": failures[:5], "failed": len(failures)}
    for arm, samples in arms.items():
        keys = samples[0].keys() if samples else ()
        out["arms"][arm] = {k: _median([s[k] for s in samples]) for k in keys} | {"samples": len(samples)}
        if arm in mapped:
            out["arms"][arm]["libcrypto_mapped"] = mapped[arm]
    ktls_total = out["arms"]["tls-ktls"].get("to_first_reply_us")
    direct_total = out["arms"]["tls-direct"].get("to_first_reply_us")
    if ktls_total and direct_total:
        out["ratio_to_first_reply"] = direct_total / ktls_total
        out["ratio_after_start"] = (
            out["arms"]["tls-direct"]["after_start_us"] / out["arms"]["tls-ktls"]["after_start_us"]
        )
    return out


# -- main -----------------------------------------------------------------------------------------


def run(plan: dict[str, Any]) -> dict[str, Any]:
    certs = ROOT / "certs"
    result: dict[str, Any] = {"kernel_release": os.uname().release, "checks": {}, "error": None}
    with open("/proc/sys/net/ipv4/tcp_available_ulp") as fh:
        result["ulp"] = fh.read().split()
    if plan.get("probe"):
        return result  # the accelerator probe: booting this far is the answer
    procs: list[subprocess.Popen[bytes]] = []
    manager: Manager | None = None
    t0 = time.monotonic()
    try:
        ports, procs = start_echo_servers(certs)
        scripted = {b: ScriptedServer(certs, b) for b in SCRIPTS}
        tls_common = {"kind": "tls", "server_name": "localhost", "ca_file": str(certs / "ca.pem"), "ktls": "on"}
        pools: dict[str, dict[str, Any]] = {}
        for key, port in ports.items():
            pools[f"ktls-{key}"] = {**tls_common, "target": f"127.0.0.1:{port}", "size": 1, "exhaustion": "wait"}
        for behaviour, server in scripted.items():
            pools[f"script-{behaviour}"] = {
                **tls_common,
                "target": f"127.0.0.1:{server.port}",
                "size": 1,
                "exhaustion": "wait",
                "post_handshake_wait": 0.0,
            }
        n = int(plan.get("figures") or 0)
        if n:
            pools["fig-aes128"] = {
                **tls_common,
                "target": f"127.0.0.1:{ports['aes128']}",
                "size": 2,
                "exhaustion": "wait",
            }
        for pool in pools.values():
            pool["borrow_timeout"] = TIMEOUT_S
            pool["connect_timeout"] = TIMEOUT_S
        manager = Manager(pools)
        manager.wait_idle(list(pools))
        result["ready_s"] = round(time.monotonic() - t0, 1)
        checks = result["checks"]
        if plan.get("checks", True):
            for key in SUITES:
                checks[f"echo_{key}"] = check_echo(manager, key)
            checks["tickets_consumed"] = check_tickets(manager)
            checks["close_notify"] = check_scripted(manager, "close_notify", ("close_notify",))
            checks["alert"] = check_scripted(manager, "alert", ("alert", "internal_error"))
            checks["key_update"] = check_scripted(manager, "key_update", ("KeyUpdate", "cannot rekey"))
            checks["key_update_raw"] = check_key_update_raw(manager)
            checks["wrong_sequence_fails"] = check_wrong_sequence(ports["aes128"], certs)
            checks["direct_maps_libcrypto"] = check_direct_maps(ports["aes128"], certs)
            result["scripted_server_errors"] = {b: s.errors for b, s in scripted.items() if s.errors}
        result["checks_s"] = round(time.monotonic() - t0, 1)
        if n:
            mapped = {}
            if "echo_aes128" in checks and "direct_maps_libcrypto" in checks:
                mapped["tls-ktls"] = bool(checks["echo_aes128"]["crypto_mapped"])
                mapped["tls-direct"] = bool(checks["direct_maps_libcrypto"]["crypto_mapped"])
            result["figures"] = figures(manager, ports["aes128"], certs, n, mapped)
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()[-2000:]
        if manager is not None:
            result["manager_log"] = manager.tail()
    finally:
        if manager is not None:
            manager.stop()
        for proc in procs:
            proc.terminate()
    result["total_s"] = round(time.monotonic() - t0, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    plan = json.loads(Path(args[0]).read_text()) if args else {}
    result = run(plan)
    sys.stdout.write(RESULT_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0 if not result.get("error") else 1


if __name__ == "__main__":
    sys.exit(main())
