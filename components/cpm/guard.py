"""Room: the manager's guards — who may bind where, who may hold how much, and signals.

The socket directory rules (created by the manager, or owned by its uid and writable by nobody
else), the per-uid bound on callers still sending their request, supplementary groups for
``allow_gids``, the listener's rest when descriptors run out, and what SIGHUP, SIGUSR1 and SIGTERM do.
"""

from __future__ import annotations

import _socket
import contextlib
import errno
import os
import signal
import socket
import stat
import struct
import time

from components.cpm.core import ACCEPT_BACKOFF_MAX, ACCEPT_LOG_WINDOW, ManagerCore
from components.cpm.model import AF_UNIX, EPOLLIN, SOCK_STREAM, Client
from components.pool_config import ConfigError, load_config

DENIAL_LOG_WINDOW = 1.0  # seconds
DENIAL_LOG_BURST = 20  # denials logged one by one per window; the rest are counted in one line
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13: the peer's supplementary groups
DRAIN_BACKLOG_MAX = 8192  # callers still in the accept backlog at shutdown answered shutting_down
# Settings a SIGHUP applies to the running manager; any other change needs a restart.
RELOADABLE = ("allow_uids", "allow_gids", "log_grants", "request_timeout", "max_pending_per_uid")


class GuardRoom(ManagerCore):
    # ---------------------------------------------------------------- start-up
    def bind(self) -> None:
        cfg = self.cfg
        path = cfg.socket
        directory = os.path.dirname(os.path.abspath(path))
        created = self.socket_directory(directory)
        self._clear_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bind under a tight umask so the file never exists with looser permissions than asked.
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, cfg.socket_mode)
        sock.listen(4096)
        sock.setblocking(False)
        self.listener = sock
        self.ep.register(sock.fileno(), EPOLLIN)
        self.log(
            "listening",
            socket=path,
            socket_mode=oct(cfg.socket_mode),
            dir_mode=oct(stat.S_IMODE(os.stat(directory).st_mode)),
            dir_created=created,
            allow_uids=sorted(cfg.allow_uids),
            allow_gids=sorted(cfg.allow_gids),
            release_identity=self.release_identity,
        )
        if not cfg.allow_uids and not cfg.allow_gids:
            detail = "allow_uids and allow_gids are empty: every caller is refused"
            self.log("nobody_allowed", level="warning", detail=detail)
        elif not cfg.allow_uids:
            detail = "allow_uids is empty: only callers in allow_gids are served"
            self.log("no_uid_allowed", level="warning", detail=detail)

    def _clear_stale(self, path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ConfigError(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        try:
            err = probe.connect_ex(path)
        finally:
            probe.close()
        if err in (errno.ECONNREFUSED, errno.ENOENT):
            # Nobody listens: a crashed run left it behind. Only a refusal proves that: a busy
            # manager with a full accept backlog answers EAGAIN, and it must keep its socket.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self.log("stale_socket_removed", socket=path)
            return
        if err in (0, errno.EAGAIN, errno.EINPROGRESS):
            raise ConfigError(f"another manager is listening on {path}")
        raise ConfigError(f"cannot tell whether {path} is in use ({os.strerror(err)}); refusing to replace it")

    def socket_directory(self, directory: str) -> bool:
        """Make sure nobody but this uid can replace the socket: True if the manager created the
        directory (with socket_dir_mode), else it must already be a real directory owned by this uid
        and writable by nobody else (like sshd's StrictModes). An existing directory is never chmod-ed."""
        mode = self.cfg.socket_dir_mode if self.cfg.socket_dir_mode is not None else 0o750
        try:
            st = os.lstat(directory)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(directory), mode=0o755, exist_ok=True)
            try:
                os.mkdir(directory, mode & 0o700)
            except FileExistsError:
                raise ConfigError(f"socket directory {directory} appeared while it was being created") from None
            os.chmod(directory, mode)  # the umask narrowed mkdir's mode; this directory is ours
            return True
        me = os.geteuid()
        if stat.S_ISLNK(st.st_mode):
            raise ConfigError(f"socket directory {directory} is a symbolic link; give the real directory")
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"socket directory {directory} exists and is not a directory")
        if st.st_uid != me:
            raise ConfigError(
                f"socket directory {directory} is owned by uid {st.st_uid}, not by the manager's uid {me}: "
                "another user could replace the socket; use a directory the manager owns or let it create one"
            )
        if st.st_mode & (stat.S_IWOTH | stat.S_IWGRP):
            raise ConfigError(
                f"socket directory {directory} is writable by {'others' if st.st_mode & stat.S_IWOTH else 'its group'} "
                f"(mode {oct(stat.S_IMODE(st.st_mode))}): another user could replace the socket; "
                "use a directory of its own (e.g. /run/cpm), which the manager creates when missing"
            )
        if self.cfg.socket_dir_mode is not None and stat.S_IMODE(st.st_mode) != self.cfg.socket_dir_mode:
            self.log(
                "socket_dir_mode_not_applied",
                level="warning",
                directory=directory,
                mode=oct(stat.S_IMODE(st.st_mode)),
                wanted=oct(self.cfg.socket_dir_mode),
                detail="socket_dir_mode applies only to a directory the manager creates",
            )
        return False

    def count_pending(self, client: Client) -> None:
        """A caller whose line has not (all) arrived holds a slot: one uid holds at most
        pending_per_uid of them, so its silent or slow connections cannot starve other uids."""
        held = self.pending_by_uid.get(client.uid, 0)
        if held >= self.cfg.pending_per_uid:
            self.busy_refused += 1
            now = time.monotonic()
            if now >= self.busy_log_until:
                self.busy_log_until = now + DENIAL_LOG_WINDOW * 10
                self.log("pending_limit", level="warning", uid=client.uid, limit=self.cfg.pending_per_uid,
                         refused=self.busy_refused)  # fmt: skip
            self.reply_error(client, "busy", f"uid {client.uid} has {held} requests still arriving")
            return
        client.pending = True
        self.pending_by_uid[client.uid] = held + 1

    def peer_groups(self, client: Client) -> list[int]:
        """The caller's supplementary groups: SO_PEERGROUPS (Linux >= 4.13), else /proc/<pid>/status."""
        if self.peergroups_supported:
            size = 64
            for _ in range(3):
                try:
                    raw = client.sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * size)
                except OSError as exc:
                    if exc.errno == errno.ERANGE:
                        size = 65536
                        continue
                    if exc.errno == errno.ENOPROTOOPT:
                        self.peergroups_supported = False
                    break
                return list(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
        try:
            with open(f"/proc/{client.pid}/status", encoding="ascii", errors="replace") as fh:
                for line in fh:
                    if line.startswith("Groups:"):
                        return [int(g) for g in line.split()[1:]]
        except (OSError, ValueError):
            pass
        return []

    def pause_accepting(self, exc: OSError) -> None:
        """Out of descriptors (EMFILE/ENFILE) or memory: rest the listener with a growing back-off
        instead of spinning on a backlog that cannot be accepted; one log line per window."""
        now = time.monotonic()
        assert self.listener is not None
        self.ep.modify(self.listener.fileno(), 0)
        self.accepting = False
        self.accept_paused_until = now + self.accept_backoff
        self.accept_backoff = min(ACCEPT_BACKOFF_MAX, self.accept_backoff * 2)
        self.accept_failures += 1
        if now >= self.accept_log_until:
            self.accept_log_until = now + ACCEPT_LOG_WINDOW
            self.log(
                "accept_paused",
                level="error",
                error=exc.strerror,
                failures=self.accept_failures,
                backoff_s=round(self.accept_paused_until - now, 3),
                clients=len(self.clients),
                parked_fds=self.parked_fds,
                window_s=ACCEPT_LOG_WINDOW,
            )
            self.accept_failures = 0

    def resume_accepting(self) -> None:
        self.accept_paused_until = 0.0
        if self.listener is not None and self.allowed_clients < self.cfg.max_clients:
            self.accepting = True
            self.ep.modify(self.listener.fileno(), EPOLLIN)

    def handle_signals(self) -> None:
        """SIGHUP: reload the configuration file (the RELOADABLE settings); SIGUSR1: log the stats."""
        pending, self.signals_pending = self.signals_pending, set()
        if signal.SIGUSR1 in pending:
            self.log("stats", **self.stats_obj())
        if signal.SIGHUP in pending:
            self.reload()

    def reload(self) -> None:
        try:
            new = load_config(self.argv)
        except ConfigError as exc:
            self.log("reload_failed", level="error", error=str(exc), detail="the running configuration is kept")
            return
        except SystemExit:
            self.log("reload_failed", level="error", error="bad command line", detail="the running config is kept")
            return
        applied = {}
        for key in RELOADABLE:
            value = getattr(new, key)
            if value != getattr(self.cfg, key):
                setattr(self.cfg, key, value)
                applied[key] = sorted(value) if isinstance(value, set) else value
        self.log_grants = self.cfg.log_grants == "each"
        ignored = [
            key
            for key in ("socket", "socket_mode", "socket_dir_mode", "max_clients", "max_relays", "default_pool")
            if getattr(new, key) != getattr(self.cfg, key)
        ]
        if {n: p.as_dict() for n, p in new.pools.items()} != {n: p.as_dict() for n, p in self.cfg.pools.items()}:
            ignored.append("pools")
        self.log("reloaded", applied=applied, restart_needed=ignored)

    def drain_for_shutdown(self) -> None:
        """SIGTERM: every caller gets one reply line. The socket file goes first (no new callers),
        then callers still in the accept backlog, then those connected (waiting or mid-request)."""
        listener = self.listener
        if listener is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.cfg.socket)
            for _ in range(DRAIN_BACKLOG_MAX):
                try:
                    fd, _ = listener._accept()  # type: ignore[attr-defined]
                except OSError:
                    break
                client = Client(_socket.socket(AF_UNIX, SOCK_STREAM, 0, fd), time.monotonic(), 0.0)
                client.allowed = True
                self.clients[client.fd] = client
                self.allowed_clients += 1
        for client in list(self.clients.values()):
            if client.out:
                with contextlib.suppress(OSError):
                    client.sock.settimeout(0.2)
                    client.sock.sendall(client.out)
                self.close_client(client)
            else:
                self.reply_error(client, "shutting_down", "the pool manager is stopping")

    def deny(self, client: Client) -> None:
        self.denied += 1
        now = time.monotonic()
        if now >= self.denial_window_until:
            self.flush_denials()
            self.denial_window_until = now + DENIAL_LOG_WINDOW
            self.denials_logged = 0
        if self.denials_logged < DENIAL_LOG_BURST:
            self.denials_logged += 1
            self.log("denied", level="warning", pid=client.pid, uid=client.uid, gid=client.gid)
        else:
            self.denials_unlogged += 1
        self.reply_error(client, "forbidden", f"uid {client.uid} / gid {client.gid} is not allowed")

    def flush_denials(self) -> None:
        if self.denials_unlogged:
            self.log("denied_more", level="warning", count=self.denials_unlogged, window_s=DENIAL_LOG_WINDOW)
            self.denials_unlogged = 0
