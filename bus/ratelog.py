"""Rate-limited logging so a hostile or broken peer cannot flood the log."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

from loguru import logger


class RateLimitedLog:
    """Log at most once per key per ``interval`` seconds; count the rest.

    Keys are typically ``(peer, reason)``. The table is bounded: once full,
    it is cleared, which at worst lets one extra line through per key.
    """

    def __init__(
        self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic, max_keys: int = 4096
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._max_keys = max_keys
        self._last: dict[Hashable, float] = {}
        self._suppressed: dict[Hashable, int] = {}

    def allow(self, key: Hashable) -> int | None:
        """None if the line must be suppressed, else how many were suppressed before it."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        if len(self._last) >= self._max_keys:
            self._last.clear()
            self._suppressed.clear()
        self._last[key] = now
        return self._suppressed.pop(key, 0)

    def warning(self, key: Hashable, message: str, *args: object) -> bool:
        suppressed = self.allow(key)
        if suppressed is None:
            return False
        tail = f" ({suppressed} similar suppressed)" if suppressed else ""
        logger.opt(depth=1).warning(message + tail, *args)
        return True
