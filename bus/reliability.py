"""Re-sending on top of an at-most-once bus, keyed by UID.

The transport may drop a frame (peer unreachable, queue full) but never
delivers one twice on its own. The sender of a UID-tagged message keeps
what it has not seen acknowledged and re-sends it when the peer comes
(back) up and periodically while it is up: :class:`Outbox`. The receiver
acts at most once per UID on its own (the LRM and the master act on the
durable records, which the messages only announce; BEHAVIOUR.md §4) and
answers each one with an :class:`~bus.messages.Ack`.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from loguru import logger

from bus.codec import Envelope
from bus.messages import Ack, Heartbeat, Message, PeerUp


@dataclass
class _Pending:
    node: str
    msg: Message
    last_sent: float
    attempts: int


class Outbox:
    """Messages sent with a UID and kept until the receiver acknowledges them.

    Re-sends happen (a) at once when the receiver comes up or restarts
    (PeerUp) and (b) whenever a heartbeat from the receiver arrives and the
    last attempt is older than ``retry_interval``: re-sends only go to a peer
    that is demonstrably alive. Thread-safe: ``put`` from an actor while
    :meth:`attach` drives the rest from the bus I/O thread.
    """

    def __init__(
        self,
        send: Callable[[str, Message], bool],
        *,
        retry_interval: float = 1.0,
        capacity: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self.retry_interval = retry_interval
        self.capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, _Pending] = OrderedDict()

    def put(self, node: str, uid: str, msg: Message) -> bool:
        """Remember ``msg`` under ``uid`` and send it now. Returns the first send's result."""
        with self._lock:
            self._pending[uid] = _Pending(node, msg, self._clock(), 1)
            self._pending.move_to_end(uid)
            if len(self._pending) > self.capacity:
                old_uid, _ = self._pending.popitem(last=False)
                # Safe to lose: the durable record still holds the result,
                # the bus is only the fast path.
                logger.warning("outbox full: giving up re-sending uid {}", old_uid)
        # Sent outside the lock: a send to ourselves delivers synchronously
        # and may come straight back here with the Ack.
        return self._send(node, msg)

    def ack(self, uid: str, node: str | None = None) -> bool:
        """Drop ``uid`` (only if it was for ``node``, when given). True if it was pending."""
        with self._lock:
            p = self._pending.get(uid)
            if p is None or (node is not None and p.node != node):
                return False
            del self._pending[uid]
            return True

    def resend(self, node: str, *, only_due: bool = False) -> int:
        """Re-send everything pending for ``node`` (or only what is due)."""
        now = self._clock()
        with self._lock:
            batch = [
                p
                for p in self._pending.values()
                if p.node == node and (not only_due or now - p.last_sent >= self.retry_interval)
            ]
            for p in batch:
                p.last_sent = now
                p.attempts += 1
        for p in batch:
            self._send(p.node, p.msg)
        return len(batch)

    def pending(self) -> dict[str, str]:
        """``{uid: node}`` of everything not yet acknowledged."""
        with self._lock:
            return {uid: p.node for uid, p in self._pending.items()}

    def attempts(self, uid: str) -> int:
        with self._lock:
            p = self._pending.get(uid)
            return 0 if p is None else p.attempts

    def on_envelope(self, env: Envelope) -> None:
        """Bus subscriber: handles Ack, PeerUp and Heartbeat envelopes."""
        body = env.body
        if isinstance(body, Ack):
            self.ack(body.uid, env.sender)
        elif isinstance(body, PeerUp):
            self.resend(body.node)
        elif isinstance(body, Heartbeat):
            # Nothing pending, the usual case at rest: no lock, no scan (36 heartbeats a
            # second at 10 nodes). Unlocked, but a put() racing with this sends itself,
            # and anything it leaves pending is looked at on the next heartbeat.
            if self._pending:
                self.resend(env.sender, only_due=True)

    def attach(self, subscribe: Callable[..., object]) -> object:
        """Wire into a transport: ``outbox.attach(transport.subscribe)``."""
        return subscribe(self.on_envelope, [Ack, PeerUp, Heartbeat])
