"""Connector process: opens TCP connections for the pool manager and passes them back in batches.

Optional (``--connector-process``). Every TCP handshake costs kernel time in the process that
calls connect(): on loopback the whole three-way handshake, both ends, runs inside that call.
With a connector, that work and the socket set-up (socket, options, connect, addresses) leave
the manager's event loop, which then only receives ready connections, up to 250 per message,
and hands them out. The connector is a forked child, not a thread, so it never competes for
the interpreter lock.

Wire (a SOCK_SEQPACKET socketpair, one datagram per message):
  manager -> connector: JSON list of ``[pool_index, count]`` demands.
  connector -> manager: JSON list of records, fds attached in the order of the ``ok`` records:
      ``[pool_index, "ok", family, peer, local_host, local_port]`` or ``[pool_index, "err", text]``.
The connector exits when the manager's end closes (EOF), so it never outlives the manager.
"""

from __future__ import annotations

import _socket
import array
import contextlib
import errno
import json
import os
import select
import signal
import socket
import time
from typing import Any

from components.pool_config import PoolConfig, apply_socket_options
from components.protocol import format_peer, split_hostport

MAX_FDS_PER_MESSAGE = 250  # the kernel's SCM_MAX_FD is 253
ANC_SPACE = socket.CMSG_SPACE(MAX_FDS_PER_MESSAGE * 4)


def _resolve(target: str) -> list[tuple[int, tuple[Any, ...]]]:
    host, port = split_hostport(target)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    infos.sort(key=lambda i: 0 if i[0] == socket.AF_INET else 1)
    return [(int(i[0]), i[4]) for i in infos]


class _ConnectorLoop:
    def __init__(self, chan: socket.socket, pools: list[PoolConfig]) -> None:
        self.chan = chan
        self.pools = pools
        self.ep = select.epoll()
        self.ep.register(chan.fileno(), select.EPOLLIN)
        self.addrs: list[list[tuple[int, tuple[Any, ...]]]] = [[] for _ in pools]
        self.addrs_expire = [0.0] * len(pools)
        self.resolved_at = [-float("inf")] * len(pools)
        self.current = [0] * len(pools)  # index of the address that last worked (tried first)
        # fd -> (pool index, socket, deadline, attempt: addresses already tried before this one)
        self.pending: dict[int, tuple[int, _socket.socket, float, int]] = {}
        self.demand = [0] * len(pools)
        self.out: list[list[Any]] = []
        self.out_fds: list[_socket.socket] = []

    def run(self) -> None:
        while True:
            events = self.ep.poll(0.05 if self.pending else 1.0, 1024)
            now = time.monotonic()
            for fd, _ev in events:
                if fd == self.chan.fileno():
                    if not self.read_demand():
                        return
                elif fd in self.pending:
                    self.finish(fd, now)
            for idx, want in enumerate(self.demand):
                while want > 0:
                    want -= 1
                    self.start(idx, now)
                self.demand[idx] = 0
            for fd, (idx, sock, deadline, attempt) in list(self.pending.items()):
                if deadline <= now:
                    del self.pending[fd]
                    sock.close()
                    self.failed(idx, now, attempt, "connect timed out")
            self.flush()

    def read_demand(self) -> bool:
        try:
            data = self.chan.recv(65536)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not data:
            return False
        for idx, count in json.loads(data):
            if 0 <= idx < len(self.pools):
                self.demand[idx] += int(count)
        return True

    def start(self, idx: int, now: float, attempt: int = 0) -> None:
        """Connect to the pool's address that last worked; on failure try the next ones in order."""
        cfg = self.pools[idx]
        if now >= self.addrs_expire[idx]:
            try:
                addrs = _resolve(cfg.target)
                if addrs != self.addrs[idx]:
                    self.current[idx] = 0
                self.addrs[idx], self.resolved_at[idx] = addrs, now
                self.addrs_expire[idx] = now + cfg.resolve_ttl
            except OSError as exc:
                if not self.addrs[idx] or now - self.resolved_at[idx] > cfg.resolve_keep:
                    # No address good recently enough: the outage is the pool's.
                    self.addrs[idx] = []
                    self.out.append([idx, "err", f"resolve {cfg.target}: {exc}"])
                    return
                # A resolver outage: keep the last good addresses (bounded) and ask again later.
                self.addrs_expire[idx] = now + max(cfg.resolve_ttl, 1.0)
        addrs = self.addrs[idx]
        index = (self.current[idx] + attempt) % len(addrs)
        family, addr = addrs[index]
        sock = _socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        try:
            apply_socket_options(sock, cfg)
            err = sock.connect_ex(addr)
        except OSError as exc:
            sock.close()
            self.failed(idx, now, attempt, exc.strerror or str(exc))
            return
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.failed(idx, now, attempt, os.strerror(err))
            return
        try:
            peer = sock.getpeername()
        except OSError:
            self.pending[sock.fileno()] = (idx, sock, now + cfg.connect_timeout, attempt)
            self.ep.register(sock.fileno(), select.EPOLLOUT)
            return
        self.ready(idx, sock, peer, attempt)

    def failed(self, idx: int, now: float, attempt: int, error: str) -> None:
        if attempt + 1 < len(self.addrs[idx]):
            self.start(idx, now, attempt + 1)  # the next address, in order
            return
        self.addrs_expire[idx] = 0.0  # every address failed: resolve again next time
        self.out.append([idx, "err", error])

    def finish(self, fd: int, now: float) -> None:
        idx, sock, _deadline, attempt = self.pending.pop(fd)
        self.ep.unregister(fd)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        try:
            if err:
                raise OSError(err, os.strerror(err))
            peer = sock.getpeername()
        except OSError as exc:
            sock.close()
            self.failed(idx, now, attempt, exc.strerror or str(exc))
            return
        self.ready(idx, sock, peer, attempt)

    def ready(self, idx: int, sock: _socket.socket, peer: tuple[Any, ...], attempt: int = 0) -> None:
        if self.addrs[idx]:
            self.current[idx] = (self.current[idx] + attempt) % len(self.addrs[idx])
        try:
            local = sock.getsockname()
            sock.setblocking(True)  # O_NONBLOCK travels with the open file: pass it on blocking
        except OSError as exc:
            sock.close()
            self.out.append([idx, "err", exc.strerror or str(exc)])
            return
        self.out.append([idx, "ok", int(sock.family), format_peer(peer), local[0], local[1]])
        self.out_fds.append(sock)

    def flush(self) -> None:
        out, socks = self.out, self.out_fds
        self.out, self.out_fds = [], []
        while out:
            # Cut so that no message carries more than MAX_FDS_PER_MESSAGE descriptors.
            cut, n_fds = 0, 0
            while cut < len(out) and (out[cut][1] != "ok" or n_fds < MAX_FDS_PER_MESSAGE):
                n_fds += out[cut][1] == "ok"
                cut += 1
            part, out = out[:cut], out[cut:]
            fds, socks = socks[:n_fds], socks[n_fds:]
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [s.fileno() for s in fds]).tobytes())]
            # If the manager is gone this fails; EOF on the channel then ends this process.
            with contextlib.suppress(OSError):
                self.chan.sendmsg([json.dumps(part, separators=(",", ":")).encode()], anc if fds else [])
            for s in fds:
                s.close()  # the manager holds them now


def start_connector(pools: list[PoolConfig]) -> tuple[int, socket.socket]:
    """Fork the connector; returns its pid and the manager's end of the channel.

    Call before any thread exists (fork copies only the calling thread).
    """
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (parent_end, child_end):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            parent_end.close()
            # Stop only through EOF from the manager: it may still be handing out connections.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            with contextlib.suppress(OSError):
                os.setsid()  # out of the manager's process group: a Ctrl-C goes to the manager
            _ConnectorLoop(child_end, pools).run()
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    child_end.close()
    parent_end.setblocking(False)
    return pid, parent_end
