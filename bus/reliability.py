"""Exactly-once *effects* on top of an at-most-once bus, keyed by UID.

The transport may drop a frame (peer unreachable, queue full) but never
delivers one twice on its own. Re-sends, however, do produce duplicates, so
the two halves of the UID protocol (BEHAVIOUR.md §4) are:

* the receiver acts once per UID and answers every duplicate with an
  :class:`~bus.messages.Ack` (and, once known, the result again):
  :class:`UidDeduplicator`;
* the sender keeps what it has not seen acknowledged and re-sends it when
  the peer comes (back) up and periodically while it is up:
  :class:`Outbox`.

Typical LRM side, in its actor::

    match dedup.admit(cmd.uid):
        case Admission.NEW:       start the job; later outbox.put(master, uid, result)
        case Admission.RUNNING:   bus.reply(env, Ack(cmd.uid))
        case Admission.DONE:      bus.reply(env, Ack(cmd.uid)); outbox.put(master, uid, dedup.result(uid))

and the master answers each CommandResult with ``Ack(uid)``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

from loguru import logger

from bus.codec import Envelope
from bus.messages import Ack, Heartbeat, Message, PeerUp

R = TypeVar("R")


class Admission(Enum):
    NEW = "new"  # never seen: act on it
    RUNNING = "running"  # seen, no result yet: acknowledge only
    DONE = "done"  # seen and finished: acknowledge and repeat the result


_NO_RESULT = object()


class UidDeduplicator(Generic[R]):
    """Remembers which UIDs were acted on, and their results.

    Bounded: beyond ``capacity`` UIDs the oldest are forgotten (the CRM
    renews UIDs on every state change, so only recent ones can come back).
    Owners should also call :meth:`retain` with the UIDs still present in the
    manager status, mirroring the LRM's result garbage collection.
    Not thread-safe: keep it inside one actor.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[str, object] = OrderedDict()

    def admit(self, uid: str) -> Admission:
        if uid in self._seen:
            return Admission.RUNNING if self._seen[uid] is _NO_RESULT else Admission.DONE
        self._seen[uid] = _NO_RESULT
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return Admission.NEW

    def record_result(self, uid: str, result: R) -> None:
        self._seen[uid] = result
        self._seen.move_to_end(uid)

    def result(self, uid: str) -> R | None:
        value = self._seen.get(uid, _NO_RESULT)
        return None if value is _NO_RESULT else value  # type: ignore[return-value]

    def retain(self, uids: Collection[str]) -> None:
        for uid in [u for u in self._seen if u not in uids]:
            del self._seen[uid]

    def __contains__(self, uid: object) -> bool:
        return uid in self._seen

    def __len__(self) -> int:
        return len(self._seen)


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
            self.resend(env.sender, only_due=True)

    def attach(self, subscribe: Callable[..., object]) -> object:
        """Wire into a transport: ``outbox.attach(transport.subscribe)``."""
        return subscribe(self.on_envelope, [Ack, PeerUp, Heartbeat])
