"""Connection Pool Manager (CPM): pre-opened backend connections handed out over a Unix socket.

Pool protocol v1 (see components/protocol.py and the README): one JSON request line
per Unix-socket connection, one JSON reply line; a successful ``acquire`` carries the
connection's fd (SCM_RIGHTS) on the reply's first byte. The connection is the caller's
from then on: the manager closes its copy and never hands it out again.

The manager lives in ``components/cpm/`` as rooms of one object: ``server`` (event loop and
client protocol), ``policy`` (take, hand out, release verdicts, exhaustion, idle sweep),
``refill`` (connects, connector process, plug-in session opens, backoff), ``stats``,
``backend_cap`` (the per-pool cap, handed-out connections included), ``guard`` (socket
directory rules, per-uid limit on unfinished requests, supplementary groups, the listener's rest
when descriptors run out, signals), over ``core`` (shared
state, logging, replies) and ``model`` (pools, connections, callers); ``release_check`` says
whether a handed-back connection is clean.
This module is the entry point and keeps the public names.

Everything runs in one thread around one epoll set: accepting callers, reading their
requests, health-checking and handing out connections, and the background refill, whose
TCP connects are non-blocking (connect + EPOLLOUT) so a slow backend never stalls callers.
Blocking work (DNS resolution, plug-in session set-up and checks) runs in worker threads
that post results back through an eventfd.

Plug-in pool kinds
------------------
A pool whose config says ``"kind": "postgres"`` (module ``components.pg_pool``), or any
kind with ``"module": "dotted.name"``, gets its connections from that module, imported
lazily when the manager starts::

    def open_session(config: dict) -> tuple[socket.socket, dict]:
        '''Blocking. Return a connected, ready-to-use socket and the JSON-able ``meta``
        object sent in the acquire reply. ``config`` is the pool's whole config dict
        (PoolConfig.session_dict(): target, size, ... plus every extra key of the pool, secrets
        as configured). Raise any exception to signal failure (counted, backed off, logged); one
        with ``login_refused = True`` waits the pool's ``login_retry`` before the next attempt.'''

    def check_session(sock: socket.socket) -> bool:
        '''Blocking. True if the session may be handed out; False discards it.'''

Both run in worker threads, never on the event loop. Optional, called on the loop (must not block):
``close_session(sock)`` to end a session the manager discards (TTL, max idle, failed check,
shutdown) instead of a plain close, and ``session_meta(sock) -> dict | None`` for an up-to-date
``meta`` at hand-out, and ``quick_check(sock) -> bool | None``, a non-blocking verdict before
hand-out (None: run ``check_session`` in a worker), and ``prepare_handout(sock, session) -> dict | None``,
called just before hand-out with the meta ``open_session`` returned, for kinds whose idle sessions
legitimately receive bytes (TLS session tickets): it consumes them and returns the reply's ``meta``
(None keeps it); if it raises, the session is discarded. TTL and max idle apply as for TCP;
``release`` is refused for plug-in kinds.
"""

from __future__ import annotations

import sys

from components.cpm.manager import Manager, main, raise_fd_limit
from components.cpm.model import Pool

__all__ = ["Manager", "Pool", "main", "raise_fd_limit"]

if __name__ == "__main__":
    sys.exit(main())
