"""What the CRM and LRM actors share: wake-ups coalesced, iterations guarded.

A daemon iteration runs on a timer tick or as soon as an event arrives (a
result, a command, a node change). Events arriving while one is queued are
coalesced into that one iteration. An exception inside an iteration is
logged with its traceback and counted; the actor itself never dies from
it. Too many failures in a row are reported to the supervisor, which takes
the node down in a defined way.
"""

from __future__ import annotations

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


class DaemonActor(pykka.ThreadingActor):
    """Base of CrmActor/LrmActor: subclasses implement :meth:`iterate` and :meth:`shutdown`."""

    name = "daemon"

    def __init__(self, node: str, on_exit: Callable[[Exited], None]) -> None:
        super().__init__()
        self.node = node
        self.on_exit = on_exit
        self.failures = 0
        self.exited = False
        self._wake_queued = threading.Event()
        self.log = logger.bind(ident=f"{node}/{self.name}")

    # called from any thread (bus I/O thread, other actors)
    def poke(self) -> None:
        if not self._wake_queued.is_set():
            self._wake_queued.set()
            self.actor_ref.tell(Wake())

    def on_receive(self, message: object) -> object:
        if self.exited:
            return None
        if isinstance(message, Wake):
            self._wake_queued.clear()
        elif isinstance(message, Shutdown):
            self.shutdown()
        elif not isinstance(message, Tick):
            return self.handle(message)
        self._run()
        return None

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

    def iterate(self) -> bool:
        raise NotImplementedError

    def shutdown(self) -> None:
        raise NotImplementedError
