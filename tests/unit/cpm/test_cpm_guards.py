"""The manager's guards under abuse: descriptors, socket directory, configuration, signals, per-uid
limits, output and supplementary groups. Real sockets and processes on loopback; every loop bounded.

After every abuse the manager still serves and holds as many descriptors as before
(``loose_fds``: its open fds minus the pools' own connections).
"""

from __future__ import annotations

import array
import json
import os
import resource
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent))

from test_pool_manager_support import (
    REPO,
    Echo,
    Manager,
    assert_still_serving,
    dead_port,
    env,
    loose_fds,
    read_json_line,
    stop,
    wait_for,
)

from components import protocol
from components.pool_config import load_config

ROOT = os.getuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root to run callers as other uids and groups")


def lowest_free_fd(pid: int) -> int:
    used = {int(name) for name in os.listdir(f"/proc/{pid}/fd")}
    return next(n for n in range(len(used) + 1) if n not in used)


def before_free(pid: int, pause: float = 0.1) -> int:
    """The lowest free descriptor a moment later: equal to the current one once nothing is closing."""
    time.sleep(pause)
    return lowest_free_fd(pid)


# ---------------------------------------------------------------- descriptors run out


def test_out_of_descriptors_rests_the_listener_and_serves_once_freed(
    echo: Echo, start_manager: Callable[..., Manager]
) -> None:
    m = start_manager(echo.target, 2, "--request-timeout", "20")
    wait_for(lambda: m.stats()["pools"]["echo"]["idle"] == 2, 10)
    before = loose_fds(m)
    # The manager closes its side of that stats call a moment after replying: a descriptor freed
    # after the limit is set would let it accept (and serve) every caller one by one. Settle first.
    wait_for(lambda: lowest_free_fd(m.pid) == before_free(m.pid), 10)
    soft, hard = resource.prlimit(m.pid, resource.RLIMIT_NOFILE)
    callers: list[socket.socket] = []
    try:
        # No descriptor left: every accept fails with EMFILE while callers queue in the backlog.
        resource.prlimit(m.pid, resource.RLIMIT_NOFILE, (lowest_free_fd(m.pid), hard))
        for _ in range(20):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(m.sock_path)
            s.sendall(protocol.encode_request("acquire", pool="echo"))
            callers.append(s)
        # (Descriptors a reply or hand-out frees a moment later may serve a caller or two first.)
        wait_for(lambda: [e for e in m.log_events() if e["event"] in ("accept_failed", "accept_paused")], 10)
        cpu0, t0 = m.cpu_seconds(), time.monotonic()
        time.sleep(1.5)
        cpu, wall = m.cpu_seconds() - cpu0, time.monotonic() - t0
        failures = [e for e in m.log_events() if e["event"] in ("accept_failed", "accept_paused")]
        # Resting, not spinning: a fraction of one CPU, and one log line per window.
        assert cpu < 0.3 * wall, (cpu, wall)
        assert len(failures) <= 2, len(failures)
    finally:
        resource.prlimit(m.pid, resource.RLIMIT_NOFILE, (soft, hard))
    # Descriptors free again: every queued caller is served.
    for s in callers:
        line = b""
        while not line.endswith(b"\n"):
            chunk, anc, _flags, _addr = s.recvmsg(4096, socket.CMSG_SPACE(4))
            assert chunk, line
            line += chunk
            for _level, _kind, data in anc:
                os.close(array.array("i", data)[0])
        assert json.loads(line)["ok"] is True, line
        s.close()
    assert_still_serving(m, before)


def test_fds_parked_on_unfinished_requests_fit_the_fd_budget(echo: Echo, sockdir: Path) -> None:
    args = ["--socket", str(sockdir / "m.sock"), "--target", echo.target, "--size", "2", "--max-relays", "0"]
    args += ["--max-clients", "40", "--max-pending-per-uid", "40", "--request-timeout", "30"]
    budget = load_config(args).fd_budget()

    def limit_to_budget() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (budget, budget))

    m = Manager(sockdir / "m.sock", echo.target, 2, *args[6:], preexec_fn=limit_to_budget)
    parkers: list[socket.socket] = []
    pipes = [os.pipe() for _ in range(4)]
    fds = array.array("i", [fd for pair in pipes for fd in pair]).tobytes()
    try:
        before = loose_fds(m)
        # 30 callers each park 8 descriptors on a line that never ends: 270 descriptors held.
        for _ in range(30):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(m.sock_path)
            s.sendmsg([b"{"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            parkers.append(s)
        time.sleep(0.3)
        for _ in range(3):
            sock, _ = protocol.acquire(m.sock_path, timeout=5)
            sock.close()
        assert m.proc.poll() is None
    finally:
        for s in parkers:
            s.close()
        for r, w in pipes:
            os.close(r)
            os.close(w)
    try:
        assert_still_serving(m, before)
    finally:
        m.stop()


# ---------------------------------------------------------------- socket directory


def _refused(sock: Path, *args: str, log: Path) -> str:
    argv = [sys.executable, "-m", "components.pool_manager", "--socket", str(sock), "--target", "127.0.0.1:9"]
    done = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=30, env=env(), cwd=REPO)
    log.write_text(done.stderr)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    failed = [json.loads(line) for line in done.stderr.splitlines() if '"bind_failed"' in line]
    assert failed, done.stderr[-2000:]
    return str(failed[0]["error"])


def test_shared_sticky_directory_is_refused_and_left_alone(sockdir: Path) -> None:
    shared = sockdir / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    error = _refused(shared / "m.sock", "--socket-dir-mode", "0750", log=sockdir / "out.log")
    assert "writable by others" in error
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777  # never chmod-ed
    assert not (shared / "m.sock").exists()


def test_symlinked_directory_is_refused_and_its_target_left_alone(sockdir: Path) -> None:
    target = sockdir / "elsewhere"
    target.mkdir(mode=0o700)
    (sockdir / "link").symlink_to(target)
    error = _refused(sockdir / "link" / "m.sock", "--socket-dir-mode", "0755", log=sockdir / "out.log")
    assert "symbolic link" in error
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert not (target / "m.sock").exists()


@needs_root
def test_directory_of_another_uid_is_refused(sockdir: Path) -> None:
    planted = sockdir / "planted"
    planted.mkdir(mode=0o755)
    os.chown(planted, 65534, 65534)
    error = _refused(planted / "m.sock", log=sockdir / "out.log")
    assert "owned by uid 65534" in error
    assert not (planted / "m.sock").exists()


def test_missing_directory_is_created_with_its_mode_and_an_existing_one_never_chmod_ed(
    echo: Echo, sockdir: Path
) -> None:
    made = sockdir / "run" / "cpm"
    m = Manager(sockdir / "m0.sock", echo.target, 1, "--socket-dir-mode", "0710", wait_ready=True)
    m.stop()
    # The manager's own directory: created with the mode asked for.
    argv = [sys.executable, "-m", "components.pool_manager", "--socket", str(made / "m.sock")]
    argv += ["--target", echo.target, "--size", "1", "--socket-dir-mode", "0710"]
    with open(sockdir / "c.log", "wb") as log:
        created = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=log, env=env(), cwd=REPO, start_new_session=True
        )
    try:
        assert read_json_line(created, 15)["event"] == "ready"
        st = made.stat()
        assert stat.S_IMODE(st.st_mode) == 0o710 and st.st_uid == os.geteuid()
    finally:
        stop(created)
    # An existing directory of its own keeps its mode: the option is for directories it creates.
    assert stat.S_IMODE(sockdir.stat().st_mode) == 0o700
    assert any(e["event"] == "socket_dir_mode_not_applied" for e in m.log_events())


# ---------------------------------------------------------------- configuration


def _config_error(sockdir: Path, text: str, *args: str) -> str:
    (sockdir / "cfg.json").write_text(text)
    argv = [sys.executable, "-m", "components.pool_manager", "--socket", str(sockdir / "m.sock")]
    argv += ["--config", str(sockdir / "cfg.json"), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env(), cwd=REPO)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0]["event"] == "config_error", done.stderr
    return str(lines[0]["error"])


def _pool(**settings: Any) -> str:
    return json.dumps({"pools": {"echo": {"target": "127.0.0.1:9", **settings}}})


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        (_pool(borrow_timeout=float("nan")), "borrow_timeout"),
        (_pool(connect_timeout=float("inf")), "connect_timeout"),
        (_pool(backoff_max=float("inf")), "backoff_max"),
        (_pool(keepalive_idle=0), "keepalive_idle"),
        (_pool(keepalive_idle=40000), "keepalive_idle"),
        (_pool(keepalive_interval=-1), "keepalive_interval"),
        (_pool(keepalive_count=1000), "keepalive_count"),
        (_pool(user_timeout_ms=-1), "user_timeout_ms"),
        (_pool(user_timeout_ms=2**31), "user_timeout_ms"),
        (_pool(size=10**30), "size"),
        (_pool(ttl=10**400), "ttl"),
        ('{"request_timeout": NaN, "pools": {"echo": {"target": "127.0.0.1:9"}}}', "request_timeout"),
        ('{"health_interval": Infinity, "pools": {"echo": {"target": "127.0.0.1:9"}}}', "health_interval"),
        ('{"max_clients": 1' + "0" * 40 + ', "pools": {"echo": {"target": "127.0.0.1:9"}}}', "max_clients"),
        ('{"allow_uids": [0], "allow_uids": [0, 1000], "pools": {"echo": {"target": "127.0.0.1:9"}}}', "allow_uids"),
        ('{"pools": {"echo": {"target": "127.0.0.1:9", "size": 1, "size": 2}}}', "'size'"),
        (_pool(kind="custom", module="json"), "open_session"),
    ],
    ids=[
        "nan-timeout", "inf-timeout", "inf-backoff", "keepidle-0", "keepidle-big", "keepintvl-neg", "keepcnt-big",
        "user-timeout-neg", "user-timeout-big", "huge-size", "huge-float", "nan-request-timeout", "inf-interval",
        "huge-max-clients", "duplicate-top-key", "duplicate-pool-key", "plugin-without-entry-points",
    ],
)  # fmt: skip
def test_configuration_values_are_checked_at_load(sockdir: Path, text: str, expect: str) -> None:
    error = _config_error(sockdir, text)
    assert expect in error, error


def test_empty_allow_list_is_a_warning(echo: Echo, sockdir: Path) -> None:
    (sockdir / "cfg.json").write_text(json.dumps({"allow_uids": [], "pools": {"echo": {"target": echo.target}}}))
    m = Manager(sockdir / "m.sock", echo.target, 1, "--config", str(sockdir / "cfg.json"))
    try:
        warnings = [e for e in m.log_events() if e["event"] == "nobody_allowed"]
        assert warnings and warnings[0]["level"] == "warning"
    finally:
        m.stop()


# ---------------------------------------------------------------- signals


@pytest.fixture
def config_manager(echo: Echo, sockdir: Path) -> Iterator[Callable[[dict[str, Any]], Manager]]:
    started: list[Manager] = []

    def start(cfg: dict[str, Any]) -> Manager:
        (sockdir / "cfg.json").write_text(json.dumps(cfg))
        m = Manager(sockdir / "m.sock", echo.target, 2, "--config", str(sockdir / "cfg.json"))
        started.append(m)
        return m

    yield start
    for m in started:
        m.stop(signal.SIGKILL if m.proc.poll() is None else signal.SIGTERM)


def test_sighup_reloads_the_access_lists_and_keeps_a_bad_file_out(
    echo: Echo, sockdir: Path, config_manager: Callable[[dict[str, Any]], Manager]
) -> None:
    cfg: dict[str, Any] = {"allow_uids": [os.getuid()], "pools": {"echo": {"target": echo.target, "size": 2}}}
    m = config_manager(cfg)
    before = loose_fds(m)
    cfg["allow_uids"] = [os.getuid() + 4242]
    (sockdir / "cfg.json").write_text(json.dumps(cfg))
    os.kill(m.pid, signal.SIGHUP)
    wait_for(lambda: any(e["event"] == "reloaded" for e in m.log_events()), timeout=5)
    with pytest.raises(protocol.PoolError) as refused:
        protocol.acquire(m.sock_path)
    assert refused.value.code == "forbidden"
    # A broken file is refused whole: the running configuration stays.
    (sockdir / "cfg.json").write_text('{"allow_uids": [0], "allow_uids": [0]}')
    os.kill(m.pid, signal.SIGHUP)
    wait_for(lambda: any(e["event"] == "reload_failed" for e in m.log_events()), timeout=5)
    cfg["allow_uids"] = [os.getuid()]
    (sockdir / "cfg.json").write_text(json.dumps(cfg))
    os.kill(m.pid, signal.SIGHUP)
    wait_for(lambda: sum(e["event"] == "reloaded" for e in m.log_events()) == 2, timeout=5)
    assert_still_serving(m, before)


def test_sigusr1_logs_the_stats(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 2)
    before = loose_fds(m)
    os.kill(m.pid, signal.SIGUSR1)
    stats = wait_for(lambda: [e for e in m.log_events() if e["event"] == "stats"], timeout=5)
    assert stats[0]["pools"]["echo"]["size"] == 2
    assert_still_serving(m, before)


def _read_line(s: socket.socket) -> bytes:
    out = b""
    while not out.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        out += chunk
    return out


def test_sigterm_answers_every_caller_and_removes_the_socket(sockdir: Path) -> None:
    # A backend that accepts two connections (its backlog) and then none: later connects hang,
    # so callers beyond the first two wait.
    backend = socket.create_server(("127.0.0.1", 0), backlog=1)
    target = f"127.0.0.1:{backend.getsockname()[1]}"
    m = Manager(sockdir / "m.sock", target, 2, "--borrow-timeout", "30", "--connect-timeout", "30",
                "--request-timeout", "30", "--settle-ms", "0")  # fmt: skip
    held: list[socket.socket] = []
    callers: list[socket.socket] = []
    try:
        for _ in range(2):
            held.append(protocol.acquire(m.sock_path)[0])
        for payload in [protocol.encode_request("acquire", pool="echo")] * 3 + [b'{"v":1,'] * 2:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(m.sock_path)
            s.sendall(payload)
            callers.append(s)
        wait_for(lambda: m.stats()["pools"]["echo"]["waiters"] == 3, timeout=5)
        m.proc.send_signal(signal.SIGTERM)
        assert m.proc.wait(15) == 0
        replies = [_read_line(s) for s in callers]
        for line in replies:
            assert line.count(b"\n") == 1, replies
            assert json.loads(line) == {"ok": False, "error": "shutting_down", "detail": "the pool manager is stopping"}
        assert not os.path.exists(m.sock_path)
    finally:
        for s in held + callers:
            s.close()
        m.stop()
        backend.close()


# ---------------------------------------------------------------- one uid's flood, another uid's acquire


def _as_user(uid: int, groups: list[int]) -> None:
    os.setgroups(groups)
    os.setgid(65534)
    os.setuid(uid)


def _flood(path: str, count: int, ready_w: int, stop_r: int) -> None:
    """Child body: as uid 65534, hold ``count`` silent connections (no request line) until told."""
    _as_user(65534, [])
    socks = []
    for _ in range(count):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        socks.append(s)
    os.write(ready_w, b"r")
    select.select([stop_r], [], [], 30)


@needs_root
def test_silent_connections_of_one_uid_cannot_starve_another(
    echo: Echo, start_manager: Callable[..., Manager], sockdir: Path
) -> None:
    sockdir.chmod(0o755)
    m = start_manager(echo.target, 4, "--socket-mode", "0666", "--allow-uid", "0", "--allow-uid", "65534",
                      "--max-clients", "64", "--request-timeout", "30")  # fmt: skip
    before = loose_fds(m)
    ready_r, ready_w = os.pipe()
    stop_r, stop_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(ready_r)
            os.close(stop_w)
            _flood(m.sock_path, 100, ready_w, stop_r)
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(stop_r)
    try:
        assert select.select([ready_r], [], [], 15)[0] and os.read(ready_r, 1) == b"r", "the flood never connected"
        # 100 silent connections of uid 65534 against 64 slots: root's acquires are still served.
        for _ in range(5):
            sock, _ = protocol.acquire(m.sock_path, timeout=5)
            sock.close()
        st = m.stats()
        assert st["clients"] <= 64 // 4 + 1, st["clients"]
        assert st["errors"].get("busy", 0) >= 100 - 16
    finally:
        os.close(stop_w)
        _, status = os.waitpid(pid, 0)
        os.close(ready_r)
    assert os.waitstatus_to_exitcode(status) == 0
    wait_for(lambda: m.stats()["clients"] == 1, timeout=5)
    assert_still_serving(m, before)


# ---------------------------------------------------------------- supplementary groups


def _acquire_as(path: str, groups: list[int]) -> str:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            os.close(r)
            _as_user(65534, groups)
            try:
                s, _ = protocol.acquire(path, timeout=5)
                s.close()
                result = "granted"
            except protocol.PoolError as exc:
                result = exc.code
            os.write(w, result.encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    got = os.read(r, 100).decode()
    os.close(r)
    assert os.waitstatus_to_exitcode(status) == 0
    return got


@needs_root
def test_allow_gids_honours_supplementary_groups(
    echo: Echo, start_manager: Callable[..., Manager], sockdir: Path
) -> None:
    sockdir.chmod(0o755)
    m = start_manager(echo.target, 2, "--socket-mode", "0666", "--allow-uid", "0", "--allow-gid", "4242")
    before = loose_fds(m)
    assert _acquire_as(m.sock_path, [4242]) == "granted"
    assert _acquire_as(m.sock_path, [4243]) == "forbidden"
    assert_still_serving(m, before)


# ---------------------------------------------------------------- output


def test_closed_stdout_before_ready_is_survived(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 2, wait_ready=False)
    assert m.proc.stdout is not None
    m.proc.stdout.close()  # nobody will read the ready line
    m.wait_socket()
    wait_for(lambda: any(e["event"] == "ready" for e in m.log_events()), timeout=10)
    before = loose_fds(m)
    assert_still_serving(m, before)
    time.sleep(0.2)
    assert m.proc.poll() is None
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(10) == 0


def test_undrained_stderr_never_stalls_the_manager(echo: Echo, sockdir: Path) -> None:
    path = str(sockdir / "m.sock")
    argv = [sys.executable, "-m", "components.pool_manager", "--socket", path, "--target", echo.target]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    proc = subprocess.Popen([*argv, "--size", "4"], **pipes, env=env(), cwd=REPO, start_new_session=True)  # type: ignore[call-overload]
    try:
        assert read_json_line(proc, 15)["event"] == "ready"
        # Each grant is a log line; nobody reads them. A pipe holds 64 KiB, about 450 of them.
        for _ in range(1500):
            sock, _ = protocol.acquire(path, timeout=5)
            sock.close()
        assert proc.poll() is None
    finally:
        stop(proc, signal.SIGKILL)


def test_stats_reply_larger_than_the_socket_buffer_arrives_whole(sockdir: Path) -> None:
    port = dead_port()
    names = [f"p{i:03d}-" + "x" * 1500 for i in range(150)]
    pools = {name: {"target": f"127.0.0.1:{port}", "size": 1, "max_connecting": 1} for name in names}
    (sockdir / "cfg.json").write_text(json.dumps({"pools": pools}))
    m = Manager(sockdir / "m.sock", f"127.0.0.1:{port}", 1, "--config", str(sockdir / "cfg.json"), wait_ready=False)
    try:
        m.wait_socket()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(m.sock_path)
        s.sendall(protocol.encode_request("stats"))
        time.sleep(0.5)  # a slow reader: the reply waits in the manager, not on the floor
        data = b""
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            data += chunk
        s.close()
        assert len(data) > 256 * 1024
        st = json.loads(data)
        assert set(names) <= set(st["pools"])
        assert m.proc.poll() is None
    finally:
        m.stop()
