"""The fd-3 entrypoint (components/c/fd3_entrypoint.c) and the functions that adopt fd 3.

Built with the system cc; runs against a real manager and echo server on loopback, and against
a scripted fake manager for the replies a real one never sends (no fd, garbage, a pipe fd).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coldstart_bench import phases

sys.path.insert(0, str(Path(__file__).parent))

from test_pool_manager_support import Echo, Manager, env, short_tmpdir

C_DIR = Path(__file__).resolve().parents[2] / "components" / "c"
CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")

pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc/gcc/clang) on PATH")

# Prints what the exec'd program inherited: the fd-3 environment and what fd 3 is.
PROBE = r"""
import json, os, socket
out = {k: v for k, v in os.environ.items() if k.startswith(("LISTEN_", "COLDSTART_FD3_"))}
out["pid"] = os.getpid()
try:
    s = socket.socket(fileno=3)
    out["fd3_peer"] = "%s:%d" % s.getpeername()[:2]
    out["fd3_inheritable"] = os.get_inheritable(3)
    s.detach()
except OSError as exc:
    out["fd3_error"] = exc.errno
print(json.dumps(out))
"""


def build(name: str, out_dir: Path) -> Path:
    assert CC is not None
    exe = out_dir / name
    subprocess.run(
        [CC, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(C_DIR / f"{name}.c")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return exe


class Setup:
    def __init__(self, d: Path) -> None:
        self.dir = d
        self.entrypoint = build("fd3_entrypoint", d)
        self.function = build("function", d)
        self.echo = Echo()
        self.manager = Manager(d / "m.sock", self.echo.target, 4)

    def stop(self) -> None:
        self.manager.stop()
        self.echo.stop()


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    with short_tmpdir() as d:
        s = Setup(d)
        try:
            yield s
        finally:
            s.stop()


def run_json(argv: list[str], extra_env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    e = env()
    e.update(extra_env or {})
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=e)
    assert out.stdout.strip(), out
    return out.returncode, json.loads(out.stdout)


def probe(s: Setup, *opts: str, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    rc, res = run_json([str(s.entrypoint), *opts, "--", sys.executable, "-c", PROBE], extra_env)
    assert rc == 0
    return res


def through(s: Setup, entry_opts: list[str], program: list[str]) -> list[str]:
    """argv running program through the entrypoint with entry_opts."""
    return [str(s.entrypoint), *entry_opts, "--", *program]


def handed_out(m: Manager) -> int:
    return int(m.stats()["pools"]["echo"]["handed_out"])


def test_success_places_connection_at_fd3_with_listen_env(setup: Setup) -> None:
    before = handed_out(setup.manager)
    res = probe(setup, "--socket", setup.manager.sock_path)
    assert res["LISTEN_FDS"] == "1" and res["LISTEN_PID"] == str(res["pid"]) and res["LISTEN_FDNAMES"] == "echo"
    assert res["fd3_peer"] == setup.echo.target and res["fd3_inheritable"] is True
    assert "COLDSTART_FD3_FALLBACK" not in res
    assert json.loads(res["COLDSTART_FD3_REPLY"])["peer"] == setup.echo.target
    assert float(res["COLDSTART_FD3_ACQUIRE_US"]) > 0
    assert int(res["COLDSTART_FD3_T_START_NS"]) <= int(res["COLDSTART_FD3_T_EXEC_NS"])
    assert handed_out(setup.manager) == before + 1


def test_manager_absent_leaves_listen_env_unset(setup: Setup) -> None:
    # Inherited LISTEN_* must not survive: they would name a process that is not ours.
    res = probe(setup, "--socket", str(setup.dir / "absent.sock"), extra_env={"LISTEN_FDS": "1", "LISTEN_PID": "1"})
    assert not any(k.startswith("LISTEN_") for k in res)
    assert res["COLDSTART_FD3_FALLBACK"].startswith("manager_unavailable: connect:")
    assert "fd3_peer" not in res and "COLDSTART_FD3_REPLY" not in res
    assert float(res["COLDSTART_FD3_ACQUIRE_US"]) >= 0


def test_unknown_pool_is_a_fallback_with_the_managers_code(setup: Setup) -> None:
    res = probe(setup, "--socket", setup.manager.sock_path, "--pool", "no-such-pool")
    assert "LISTEN_FDS" not in res and "fd3_peer" not in res
    assert res["COLDSTART_FD3_FALLBACK"].startswith("unknown_pool: ")


def test_forbidden_peer_is_a_fallback(setup: Setup) -> None:
    other_uid = str(os.getuid() + 4242)
    m = Manager(setup.dir / "f.sock", setup.echo.target, 1, "--allow-uid", other_uid, "--allow-gid", other_uid)
    try:
        res = probe(setup, "--socket", m.sock_path)
        assert res["COLDSTART_FD3_FALLBACK"].startswith("forbidden: ")
        assert "LISTEN_FDS" not in res and "fd3_peer" not in res
    finally:
        m.stop()


def fake_manager(path: Path, answer: Callable[[socket.socket], None]) -> threading.Thread:
    """A one-shot manager: reads the request line, answers with `answer`, closes."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    srv.settimeout(20)

    def serve() -> None:
        try:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(5)
                buf = b""
                while not buf.endswith(b"\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                answer(conn)
        finally:
            srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def _send_with_fd(conn: socket.socket, line: bytes, fd: int) -> None:
    socket.send_fds(conn, [line], [fd])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("no_fd", "no_fd: "),
        ("garbage", "internal: malformed reply"),
        ("closed", "manager_unavailable: manager closed"),
        ("pipe_fd", "bad_fd: not a socket"),
        ("listening_fd", "bad_fd: socket not connected"),
    ],
)
def test_bad_manager_replies_are_fallbacks(setup: Setup, name: str, expected: str) -> None:
    keep: list[Any] = []

    def answer(conn: socket.socket) -> None:
        ok = b'{"ok":true,"pool":"echo","peer":"127.0.0.1:1","id":7}\n'
        if name == "no_fd":
            conn.sendall(ok)
        elif name == "garbage":
            conn.sendall(b"this is not json\n")
        elif name == "pipe_fd":
            r, w = os.pipe()
            keep.extend([r, w])
            _send_with_fd(conn, ok, r)
        elif name == "listening_fd":
            lst = socket.create_server(("127.0.0.1", 0))
            keep.append(lst)
            _send_with_fd(conn, ok, lst.fileno())

    path = setup.dir / f"fake-{name}.sock"
    t = fake_manager(path, answer)
    try:
        res = probe(setup, "--socket", str(path), "--timeout", "5")
    finally:
        t.join(10)
        for item in keep:
            item.close() if isinstance(item, socket.socket) else os.close(item)
    assert res["COLDSTART_FD3_FALLBACK"].startswith(expected), res
    assert "LISTEN_FDS" not in res and "fd3_peer" not in res


def test_silent_manager_times_out(setup: Setup) -> None:
    done = threading.Event()
    path = setup.dir / "silent.sock"
    t = fake_manager(path, lambda _conn: done.wait(10))
    try:
        res = probe(setup, "--socket", str(path), "--timeout", "0.3")
    finally:
        done.set()
        t.join(10)
    assert res["COLDSTART_FD3_FALLBACK"].startswith("timeout: ")
    assert float(res["COLDSTART_FD3_ACQUIRE_US"]) >= 250_000


def test_usage_errors(setup: Setup) -> None:
    no_program = subprocess.run([str(setup.entrypoint), "--socket", "/x"], capture_output=True, text=True, timeout=10)
    assert no_program.returncode == 2 and "no program" in no_program.stderr
    bad_timeout = subprocess.run(
        [str(setup.entrypoint), "--timeout", "-1", "--", "true"], capture_output=True, timeout=10
    )
    assert bad_timeout.returncode == 2
    missing = subprocess.run(
        [str(setup.entrypoint), "--socket", str(setup.dir / "absent.sock"), "--", str(setup.dir / "no-such-program")],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert missing.returncode == 127 and "cannot execute" in missing.stderr


# --- the functions ---------------------------------------------------------------------------

PY_FUNCTION = [sys.executable, "-m", "components.function"]


def function_argv(s: Setup, language: str) -> list[str]:
    if language == "python":
        return PY_FUNCTION
    return [str(s.function)]


@pytest.mark.parametrize("language", ["python", "c"])
def test_function_through_entrypoint_uses_fd3(setup: Setup, language: str) -> None:
    before = handed_out(setup.manager)
    rc, rec = run_json(
        # A dead target: only fd 3 can make it ok.
        through(
            setup,
            ["--socket", setup.manager.sock_path],
            [*function_argv(setup, language), "--mode", "fd3", "--target", "127.0.0.1:1"],
        )
    )
    assert rc == 0 and rec["ok"] is True, rec
    assert rec["path"] == "fd3" and rec["mode"] == "fd3" and rec["fallback_reason"] is None
    assert rec["fd_check"]["ok"] is True and rec["fd_check"]["peer_matches"] is True
    assert rec["peer"] == setup.echo.target and rec["resolve_us"] is None
    assert 0 < rec["fd_recv_us"] == rec["acquire_us"] <= rec["connect_us"] and rec["request_rtt_us"] > 0
    assert phases.check(rec) == []
    assert rec["t_entry_ns"] <= rec["t_exec_ns"] <= rec["t_main_ns"] <= rec["t_connected_ns"] <= rec["t_end_ns"]
    assert rec["runtime_startup_us"] == pytest.approx((rec["t_main_ns"] - rec["t_exec_ns"]) / 1e3, abs=1)
    # The entrypoint's acquire and check happened before main: connection work, not runtime start-up.
    assert rec["acquire_us"] < rec["pre_main_us"] <= rec["acquire_us"] + rec["verify_us"] + 0.2
    assert phases.derived(rec)["runtime_start_us"] < (rec["t_main_ns"] - rec["t_entry_ns"]) / 1e3
    assert isinstance(rec["pool_id"], int)
    assert handed_out(setup.manager) == before + 1


@pytest.mark.parametrize("language", ["python", "c"])
def test_function_falls_back_when_the_entrypoint_could_not_acquire(setup: Setup, language: str) -> None:
    rc, rec = run_json(
        through(
            setup,
            ["--socket", str(setup.dir / "absent.sock")],
            [*function_argv(setup, language), "--mode", "fd3", "--target", setup.echo.target],
        )
    )
    assert rc == 0 and rec["ok"] is True, rec
    assert rec["path"] == "fallback" and rec["fallback_reason"].startswith("manager_unavailable")
    assert rec["fd_recv_us"] is None and rec["socket_attempt_us"] > 0
    assert rec["connect_us"] >= rec["socket_attempt_us"] + rec["handshake_us"] - 1


@pytest.mark.parametrize("language", ["python", "c"])
def test_function_fd3_without_entrypoint(setup: Setup, language: str) -> None:
    # Inherited LISTEN_FDS naming another pid must not make the function adopt fd 3.
    argv = [*function_argv(setup, language), "--mode", "fd3", "--target", setup.echo.target]
    rc, rec = run_json(argv, {"LISTEN_FDS": "1", "LISTEN_PID": "1"})
    assert rc == 0 and rec["path"] == "fallback" and rec["fallback_reason"].startswith("no_listen_fds")
    rc, rec = run_json([*argv, "--no-fallback"])
    assert rc == 1 and rec["ok"] is False and "no_listen_fds" in rec["error"]


def test_c_function_direct(setup: Setup) -> None:
    rc, rec = run_json(
        [str(setup.function), "--mode", "direct", "--target", setup.echo.target, "--payload-size", "300"]
    )
    assert rc == 0 and rec["ok"] is True and rec["path"] == "direct" and rec["runtime"] == "c"
    assert rec["peer"] == setup.echo.target and rec["fd_check"]["ok"] is True
    assert rec["acquire_us"] == pytest.approx(rec["resolve_us"] + rec["handshake_us"], abs=0.2)
    assert phases.check(rec) == [] and rec["verify_us"] > 0 and rec["library_load_us"] == 0
    assert rec["request_rtt_us"] > 0 and "lo" in rec["interfaces"]
    assert rec["prefetch_us"] > 0 and rec["prefetch_bytes"] > 0


def test_c_function_requests_and_no_prefetch(setup: Setup) -> None:
    argv = [str(setup.function), "--mode", "direct", "--target", setup.echo.target, "--requests", "4"]
    rc, rec = run_json([*argv, "--no-prefetch"])
    assert rc == 0 and rec["ok"] is True, rec
    assert len(rec["request_rtts_us"]) == 4 and rec["first_request_us"] == rec["request_rtts_us"][0]
    ordered = sorted(rec["request_rtts_us"])
    assert rec["request_rtt_us"] == pytest.approx((ordered[1] + ordered[2]) / 2, abs=0.11)
    assert rec["t_connected_ns"] <= rec["t_first_reply_ns"] <= rec["t_end_ns"]
    assert rec["prefetch_us"] is None and rec["prefetch_bytes"] is None
    bad = subprocess.run([*argv[:-2], "--requests", "0"], capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "--requests" in bad.stderr


def test_entrypoint_without_acquire_only_stamps(setup: Setup) -> None:
    before = handed_out(setup.manager)
    rc, rec = run_json(
        through(
            setup,
            ["--socket", setup.manager.sock_path, "--no-acquire"],
            [str(setup.function), "--mode", "direct", "--target", setup.echo.target],
        ),
        {"LISTEN_FDS": "1", "COLDSTART_FD3_ACQUIRE_US": "5"},
    )
    assert rc == 0 and rec["ok"] is True and rec["path"] == "direct", rec
    assert handed_out(setup.manager) == before  # nothing acquired
    assert rec["t_entry_ns"] <= rec["t_exec_ns"] <= rec["t_main_ns"] and rec["pre_main_us"] == 0
    assert phases.check(rec) == []


def test_c_function_reports_errors(setup: Setup) -> None:
    rc, rec = run_json([str(setup.function), "--mode", "direct", "--target", "127.0.0.1:1"])
    assert rc == 1 and rec["ok"] is False and rec["error"].startswith("ConnectionError")
    bad = subprocess.run([str(setup.function), "--mode", "socket"], capture_output=True, text=True, timeout=10)
    assert bad.returncode == 2 and "--mode" in bad.stderr


def test_c_function_detects_a_closing_backend(setup: Setup) -> None:
    # A backend that accepts and closes: the echo check must fail, not pass on a short read.
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def close_one() -> None:
        conn, _ = srv.accept()
        conn.close()

    t = threading.Thread(target=close_one, daemon=True)
    t.start()
    try:
        rc, rec = run_json([str(setup.function), "--mode", "direct", "--target", f"127.0.0.1:{port}"])
    finally:
        t.join(10)
        srv.close()
    assert rc == 1 and rec["ok"] is False
    assert rec["error"].startswith(("ConnectionError", "OSError")), rec
