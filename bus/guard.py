"""Limits on inbound connections, so that no flood of them can starve the process of file descriptors.

Each TCP connection a node accepts costs a file descriptor, and the store,
the lease renewals and the watchdog need descriptors too: 1,100 idle
connections to a CURVE port once made a renewal fail with "Too many open
files" and the node fenced itself (issue #11). libzmq accepts every
connection it can and cannot close one chosen peer of a socket, so this
guard works beside it: a socket monitor reports each accepted connection
(``EVENT_ACCEPTED``, the value is its descriptor) and each one that ends
(``EVENT_DISCONNECTED``, same descriptor). A connection over a limit is shut
down (``shutdown(2)``, not ``close(2)``: the descriptor stays libzmq's, which
then sees the end of the connection and closes it itself). Refused:

* every connection while fewer than ``fd_reserve`` descriptors are free
  below the soft limit (Linux hands out the lowest free number, so a
  descriptor numbered N means 0..N-1 are all taken);
* connections over ``max_total`` open at once on the socket (at most half
  the descriptors above the reserve);
* connections over ``max_per_source`` open at once from one address.

Idle connections that never finish their handshake are closed by libzmq
after ``ZMQ_HANDSHAKE_IVL`` (:mod:`bus.sockets`), so they free their
slot. The soft limit itself is raised to the hard limit when ``ha-node``
starts (:func:`raise_fd_limit`). See docs/PROTOCOL.md section 2 "Limits".
"""

from __future__ import annotations

import resource
import socket
from collections.abc import Callable

import zmq

from bus.config import TransportConfig
from bus.ratelog import RateLimitedLog

GUARD_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; returns (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep the old limit; the guard's reserve still holds
    return soft, hard


class InboundGuard:
    """Counts one listening socket's inbound connections and shuts down those over a limit."""

    def __init__(
        self,
        node: str,
        *,
        max_total: int,
        max_per_source: int,
        fd_reserve: int,
        count: Callable[[str], None],
        rlog: RateLimitedLog,
    ) -> None:
        self.node = node
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            soft = 1 << 20
        self.fd_ceiling = max(0, soft - fd_reserve)
        self.max_total = max(1, min(max_total, self.fd_ceiling // 2))
        self.max_per_source = max_per_source
        self._count, self._rlog = count, rlog
        self.port: int | None = None  # of the listening socket, set once bound
        self._open: dict[int, str] = {}  # descriptor -> source address
        self._per_source: dict[str, int] = {}

    @classmethod
    def of(
        cls, node: str, cfg: TransportConfig, count: Callable[[str], None], rlog: RateLimitedLog
    ) -> InboundGuard:
        return cls(
            node,
            max_total=cfg.max_connections,
            max_per_source=cfg.max_connections_per_source,
            fd_reserve=cfg.fd_reserve,
            count=count,
            rlog=rlog,
        )

    def bound(self, endpoint: str) -> str:
        """The guarded socket is bound at ``endpoint`` (its LAST_ENDPOINT); returns it."""
        if endpoint.startswith("tcp://"):
            self.port = int(endpoint.rsplit(":", 1)[1])
        return endpoint

    @property
    def open(self) -> int:
        return len(self._open)

    def event(self, kind: int, fd: int) -> None:
        """One monitor event of the guarded socket (``GUARD_EVENTS``)."""
        if kind == zmq.EVENT_DISCONNECTED:
            source = self._open.pop(fd, None)
            if source is not None:
                left = self._per_source[source] - 1
                if left:
                    self._per_source[source] = left
                else:
                    del self._per_source[source]
        elif kind == zmq.EVENT_ACCEPTED:
            self._accepted(fd)

    def _accepted(self, fd: int) -> None:
        sock = socket.socket(fileno=fd)  # wraps the descriptor, never closes it (detach below)
        try:
            try:
                # SAFETY: the connection may have ended and its number been reused
                # (by the store, say) before this event was read: only a socket whose
                # local port is our listening port is one of ours.
                if sock.getsockname()[1] != self.port:
                    return
                source = str(sock.getpeername()[0])
            except OSError:
                return  # already gone
            if fd >= self.fd_ceiling:
                why = "fd_reserve"
            elif len(self._open) >= self.max_total:
                why = "max_total"
            elif self._per_source.get(source, 0) >= self.max_per_source:
                why = "max_per_source"
            else:
                self._open[fd] = source
                self._per_source[source] = self._per_source.get(source, 0) + 1
                return
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                return
            self._count("refused_connection." + why)
            self._rlog.warning(
                ("guard", source, why),
                "bus {}: refused a connection from {} ({}: {} open, {} from there)",
                self.node,
                source,
                why,
                len(self._open),
                self._per_source.get(source, 0),
            )
        finally:
            sock.detach()
