"""Frames other threads hand to the transport's I/O thread: a deque plus a wake-up fd.

The I/O thread must send some frames itself: replies to clients (through the
ROUTER, which no other thread touches) and sends to this very node. Other
threads append them to a deque (append and popleft are atomic) and poke a
wake-up fd the I/O thread polls. The fd is only written when the I/O thread
said it is about to sleep (:attr:`Handover.idle`), so a busy bus moves frames
with no syscall and no lock at all. (Measured with bench/bus.py: handing
every frame over through per-thread inproc PUSH sockets cost about half the
throughput of this.)
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
from collections.abc import Callable

from bus.errors import BusError


class Handover:
    """The queue to the I/O thread. ``open()`` before the thread starts, ``close()`` after it ended."""

    def __init__(self, limit: int) -> None:
        self.limit = limit  # frames queued before senders shed load (0: no limit)
        self.queue: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self.idle = False  # set by the I/O thread just before it sleeps
        self.closed = False
        self.waker: Waker | None = None

    def open(self) -> None:
        self.waker = Waker()

    def post(self, target: bytes, frame: bytes) -> str | None:
        """Queue ``frame`` for ``target``; None, or the counter of why it was dropped."""
        if self.closed:
            return "dropped.closed"
        waker = self.waker
        if waker is None:
            raise BusError("transport not started")
        if self.limit and len(self.queue) >= self.limit:
            # The I/O thread is `limit` frames behind: shed load here rather
            # than block an actor thread or grow without bound.
            return "dropped.backlog"
        self.queue.append((target, frame))
        # Ordering matters: append, then read the flag. The I/O thread sets
        # the flag, then re-checks the queue before sleeping, so one of the
        # two always sees the other and no frame waits for a timer.
        if self.idle:
            self.idle = False
            waker.wake()
        return None

    def drain(self, route: Callable[[bytes, bytes], object], batch: int) -> None:
        """I/O thread: route up to ``batch`` queued frames."""
        popleft = self.queue.popleft
        # Bounded, so a flood of local sends cannot starve inbound traffic
        # and timers; whatever is left makes the next poll non-blocking.
        for _ in range(batch):
            try:
                target, frame = popleft()
            except IndexError:
                return
            route(target, frame)

    def close(self) -> None:
        """After the I/O thread is gone: every later post is dropped, the fd is closed."""
        self.closed = True
        if self.waker is not None:
            self.waker.close()
        self.queue.clear()


class Waker:
    """A pollable fd other threads poke to wake the I/O thread.

    Writes are plain syscalls, safe from any thread; ``close`` happens only
    after the I/O thread is gone and every later ``wake`` is a no-op.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        if hasattr(os, "eventfd"):
            self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._wfd = self.fd
        else:  # pragma: no cover - non-Linux fallback
            self.fd, self._wfd = os.pipe()
            os.set_blocking(self.fd, False)
            os.set_blocking(self._wfd, False)

    def wake(self) -> None:
        # The lock only guards against writing into a closed (and possibly
        # re-used) fd number during stop(); it is uncontended in practice.
        with self._lock:
            if not self._closed:
                # BlockingIOError: already signalled, the I/O thread wakes anyway.
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wfd, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 4096)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self.fd)
                if self._wfd != self.fd:
                    os.close(self._wfd)
