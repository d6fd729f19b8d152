"""Who gets which envelope: the transport's subscribers, by message kind.

Subscribers are plain callables ``deliver(envelope)``; they run on the
transport's I/O thread and must not block (``actor_ref.tell`` is the intended
use). The table is copy-on-write: the I/O thread reads the current routes
without locking, and every (un)subscribe publishes a new one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from bus.codec import Envelope
from bus.messages import Message

Deliver = Callable[[Envelope], object]
Routes = dict[str, tuple[Deliver, ...]]


class Subscription:
    def __init__(self, owner: Subscribers, deliver: Deliver, kinds: frozenset[str] | None) -> None:
        self._owner, self.deliver, self.kinds = owner, deliver, kinds

    def cancel(self) -> None:
        self._owner.remove(self)


class Subscribers:
    """The subscriptions of one transport; ``publish(routes, everything)`` gets each new table.

    ``routes[kind]`` lists the callbacks for that kind in subscription order,
    followed by the catch-all ones; ``everything`` (the catch-all ones alone)
    serves kinds nobody subscribed to by name.
    """

    def __init__(self, publish: Callable[[Routes, tuple[Deliver, ...]], None]) -> None:
        self._publish = publish
        self._subs: tuple[Subscription, ...] = ()
        self._lock = threading.Lock()
        publish({}, ())

    def add(self, deliver: Deliver, kinds: Iterable[type[Message] | str] | None = None) -> Subscription:
        ks = None if kinds is None else frozenset(k if isinstance(k, str) else k.KIND for k in kinds)
        sub = Subscription(self, deliver, ks)
        with self._lock:
            self._subs = (*self._subs, sub)
            self._rebuild()
        return sub

    def remove(self, sub: Subscription) -> None:
        with self._lock:
            self._subs = tuple(s for s in self._subs if s is not sub)
            self._rebuild()

    def _rebuild(self) -> None:
        routes: dict[str, list[Deliver]] = {}
        everything: list[Deliver] = []
        for s in self._subs:
            if s.kinds is None:
                everything.append(s.deliver)
            else:
                for k in s.kinds:
                    routes.setdefault(k, []).append(s.deliver)
        # Callbacks keep subscription order; "all" subscribers come after kind ones.
        self._publish({k: (*v, *everything) for k, v in routes.items()}, tuple(everything))
