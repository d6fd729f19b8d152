"""Our DEALER to each peer, and the rule that lets any thread send on it.

Every node keeps one DEALER connected to each other member's ROUTER; a
message from A to B travels A.DEALER[B] -> B.ROUTER. ZeroMQ sockets are not
thread-safe, and the I/O thread (:mod:`bus.transport`) owns every other
socket. A DEALER is the one deliberate exception: the I/O thread creates,
configures and in the end closes it, and in between it is a send-only socket,
never polled or read, used by whichever thread sends (the I/O thread too:
heartbeats, sends from subscriber callbacks), but only while holding that
peer's lock. libzmq allows moving a socket between threads given a full
memory barrier, which the lock provides, so a send costs the caller one
encode and one zmq_send, with no hop to the I/O thread (docs/PROTOCOL.md
section 12 "Threading"; measured with bench/bus.py: handing every frame to
the I/O thread cost about half the throughput).

Sending is at-most-once: with ``IMMEDIATE`` (:mod:`bus.sockets`) a frame to
an unreachable peer is dropped and counted at once, never queued for a later,
stale delivery.
"""

from __future__ import annotations

import threading

import zmq

_NOBLOCK = zmq.NOBLOCK


class PeerLink:
    """Our DEALER to one peer: usable from any thread, but only under ``lock``.

    ``Transport.send`` inlines :meth:`send` on its hot path; keep the two alike.
    """

    __slots__ = ("closed", "counts", "lock", "name", "sent", "sock")

    def __init__(self, name: str, sock: zmq.Socket[bytes]) -> None:
        self.name = name
        self.sock = sock
        self.lock = threading.Lock()
        self.closed = False
        self.sent = 0  # the hot counter, a plain int; the rare ones in counts
        self.counts: dict[str, int] = {}

    def send(self, frame: bytes) -> bool:
        """Hand ``frame`` to the peer's connection, or drop it and count why."""
        with self.lock:
            if self.closed:
                key = "dropped.closed"
            else:
                try:
                    self.sock.send(frame, _NOBLOCK)
                except zmq.Again:
                    # With IMMEDIATE, Again means "no completed connection" or
                    # "send_hwm frames already queued for a peer that does not
                    # read": either way the peer cannot take it now. (Telling
                    # the two apart from the link state would race with the
                    # monitor events, so they share one counter.)
                    key = "dropped.unreachable"
                else:
                    self.sent += 1
                    return True
            self.counts[key] = self.counts.get(key, 0) + 1
            return False

    def send_heartbeat(self, frame: bytes) -> bool:
        """Like :meth:`send`, uncounted: False while the peer is down is no loss."""
        with self.lock:
            try:
                self.sock.send(frame, _NOBLOCK)
            except zmq.Again:
                return False
            return True

    def take_new_connections(self) -> None:
        """Let the DEALER adopt a connection whose handshake just succeeded.

        libzmq queued the new connection's pipe for the DEALER (a "bind"
        command) before it emitted the handshake event, but the DEALER takes it
        in only when it processes its commands, which send() does at most once
        per ~1 ms (a TSC throttle). A send soon after the previous one (a
        re-send on PeerUp, right after a heartbeat) would then find no pipe and
        be dropped (issue #10). ZMQ_EVENTS processes the commands unthrottled.
        """
        with self.lock:
            if not self.closed:
                self.sock.getsockopt(zmq.EVENTS)

    def counters(self) -> dict[str, int]:
        with self.lock:
            return {**self.counts, "sent": self.sent}

    def take_back(self) -> None:
        """Stop sender threads from using the DEALER (the I/O thread closes it next).

        Once ``closed`` is set under the lock no sender touches the socket again
        (they check it under the same lock), and taking the lock is the memory
        barrier after their last send.
        """
        with self.lock:
            self.closed = True
