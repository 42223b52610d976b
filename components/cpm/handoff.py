"""How a pooled connection reaches its caller: the hand-off strategy.

Every hand-out goes through ``Pool.handoff.deliver(client, conn, reply)`` (see
``PolicyRoom.hand_out``). The default, ``FdPassing``, sends the reply line with the connection's
fd on its first byte (SCM_RIGHTS) and closes the manager's copy. A strategy for callers that
cannot receive a TCP fd (a relay: the caller gets one end of an AF_UNIX socketpair and the
manager copies bytes between the other end and the pooled connection) implements the same
method and is set on the pools that use it; it then owns ``conn`` after a successful delivery.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

from components.cpm.model import SEND_FLAGS, Client, Conn


class Handoff(Protocol):
    name: str

    def deliver(self, client: Client, conn: Conn, reply: bytes) -> bool:
        """Send ``reply`` and the connection to the caller, on the event loop (must not block long).

        True: the caller has it and the strategy owns ``conn`` (closed or kept). False: nothing
        was transferred; the manager still owns ``conn``, unused, and puts it back.
        """
        ...


class FdPassing:
    """Pool protocol v1: the fd rides on the reply's first byte; the manager's copy is closed."""

    name = "fd"

    def deliver(self, client: Client, conn: Conn, reply: bytes) -> bool:
        try:
            sent = client.sock.sendmsg([reply], conn.anc, SEND_FLAGS)
        except OSError:
            return False
        if sent < len(reply):
            # The fd went with the first byte; finish the line blocking-briefly (tiny, rare).
            with contextlib.suppress(OSError):
                client.sock.settimeout(0.2)
                client.sock.sendall(reply[sent:])
        conn.sock.close()
        return True


FD_PASSING = FdPassing()
