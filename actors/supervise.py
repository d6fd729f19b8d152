"""Restart an actor that stopped unexpectedly (the node supervisor's "defined way", issue #10).

pykka has no supervisors: an actor whose handler raises is stopped, and every
later ``tell`` to it fails with ``ActorDeadError`` (which callers suppress), so
without this a dead actor would be silent. :class:`Supervised` holds the
current reference and a way to start a new one; :meth:`check` (called from the
node's ticker) starts a new actor when the old one is no longer alive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import pykka
from loguru import logger

A = TypeVar("A", bound=pykka.Actor)


class Supervised(Generic[A]):
    def __init__(self, name: str, start: Callable[[], pykka.ActorRef[A]], ident: str = "") -> None:
        self.name = name
        self._start = start
        self.log = logger.bind(ident=ident or name)
        self.ref: pykka.ActorRef[A] = start()
        self.restarts = 0

    def check(self) -> bool:
        """Start a new actor if the current one stopped; True when it did."""
        if self.ref.is_alive():
            return False
        self.log.error(f"the {self.name} actor stopped unexpectedly: restarting it")
        try:
            self.ref = self._start()
        except Exception as e:  # tried again on the next check
            self.log.error(f"the {self.name} actor could not be restarted: {e}")
            return False
        self.restarts += 1
        return True
