"""What the CRM and LRM actors share: wake-ups coalesced, iterations guarded.

A daemon iteration runs on a timer tick or as soon as an event arrives (a
result, a command, a node change). Events arriving while one is queued are
coalesced into that one iteration. An exception inside an iteration is
logged with its traceback and counted; the actor itself never dies from
it. Too many failures in a row are reported to the supervisor, which takes
the node down in a defined way.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import pykka
from loguru import logger

MAX_CONSECUTIVE_FAILURES = 5


@dataclass(frozen=True)
class Tick:
    """Timer: time for the periodic iteration (lease renewal, watchdog update)."""


@dataclass(frozen=True)
class Wake:
    """An event arrived: iterate now."""


@dataclass(frozen=True)
class Shutdown:
    """Orderly stop requested (the reference's daemon stop)."""


@dataclass(frozen=True)
class Exited:
    """Sent to the supervisor: the daemon's loop ended (``error`` None = orderly)."""

    daemon: str
    error: str | None = None


class Waker:
    """Wake a daemon actor from any thread; wake-ups pending at once collapse into one.

    Create it before the actor, pass it to the actor, and bind the actor's
    ref after ``start()``: ``waker.ref = Actor.start(..., waker=waker)``.
    """

    def __init__(self) -> None:
        self.queued = threading.Event()
        self.ref: pykka.ActorRef[DaemonActor] | None = None

    def poke(self) -> None:
        if self.ref is None or self.queued.is_set():
            return
        self.queued.set()
        with contextlib.suppress(pykka.ActorDeadError):
            self.ref.tell(Wake())


class TickGate:
    """When a daemon next wants a timer tick: set by its actor, read by the node's ticker.

    The ticker does not send a tick the daemon would drop (:meth:`DaemonActor.tick_due`),
    so such a daemon's thread does not wake for nothing (issue #17). One float, written by
    one thread and read by another: atomic under the GIL. Events are not gated.
    """

    def __init__(self) -> None:
        self.not_before = -math.inf

    def due(self, now: float) -> bool:
        return now >= self.not_before


class DaemonActor(pykka.ThreadingActor):
    """Base of CrmActor/LrmActor: subclasses implement :meth:`iterate` and :meth:`shutdown`."""

    name = "daemon"

    def __init__(self, node: str, on_exit: Callable[[Exited], None], waker: Waker | None = None) -> None:
        super().__init__()
        self.node = node
        self.on_exit = on_exit
        self.failures = 0
        self.exited = False
        self.waker = waker or Waker()
        self.log = logger.bind(ident=f"{node}/{self.name}")

    def on_start(self) -> None:
        self.waker.ref = self.actor_ref

    def on_receive(self, message: object) -> object:
        if self.exited:
            return None
        if isinstance(message, Wake):
            self.waker.queued.clear()
        elif isinstance(message, Shutdown):
            self.shutdown()
        elif not isinstance(message, Tick):
            return self.handle(message)
        elif not self.tick_due():
            return None
        self._run()
        return None

    def tick_due(self) -> bool:
        """Does this timer tick need an iteration? (Events always get one.)"""
        return True

    def handle(self, message: object) -> object:
        """Other messages (subclasses)."""
        return None

    def _run(self) -> None:
        try:
            keep = self.iterate()
            self.failures = 0
        except Exception as e:
            self.failures += 1
            self.log.opt(exception=e).error(f"iteration failed ({self.failures} in a row): {e}")
            if self.failures >= MAX_CONSECUTIVE_FAILURES:
                self.exited = True
                self.on_exit(Exited(self.name, f"{self.failures} failed iterations, last: {e}"))
            return
        if not keep:
            self.exited = True
            self.on_exit(Exited(self.name))

    def on_failure(self, exception_type: object, exception_value: object, traceback: object) -> None:
        # only reachable through a bug outside the guarded iteration: report it as a failure
        self.log.critical(f"{self.name} actor died: {exception_value!r}")
        if not self.exited:
            self.exited = True
            self.on_exit(Exited(self.name, f"actor died: {exception_value!r}"))

    def iterate(self) -> bool:
        raise NotImplementedError

    def shutdown(self) -> None:
        raise NotImplementedError
