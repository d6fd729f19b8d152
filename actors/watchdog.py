"""The WatchdogActor and the node daemon's link to ``ha-watchdog``, with its guard.

Clients are the CRM (while master) and the LRM (while holding its agent
lease), exactly as with the reference's watchdog-mux (BEHAVIOUR.md §3.1.5,
§3.2.7). The actor pets the driver every ``pet_interval``, and at once when a
client updates (at most every ``MIN_PET_GAP``), only while

- the node is quorate (a ``QuorumLost`` message stops petting at once), and
- every open client updated within ``client_timeout``.

With no client open the driver is disarmed (magic close).

:class:`SocketDriver` talks to ``ha-watchdog`` (cli/watchdog.py) over its UNIX
socket and runs the **guard**: a thread that reads the watchdog's status
bytes and fences the node itself (through ``on_lost``) when the watchdog

- closed the connection (it died: SIGKILL, OOM killer, crash),
- stayed silent for ``guard_timeout`` (it is stopped or starved),
- does not confirm being armed within ``guard_timeout`` of our first pet, or
- let its own deadline pass without firing (``watchdog_timeout`` after our
  last pet plus a grace): it should have killed us by then.

SAFETY: the watchdog is what lets the rest of the cluster recover this node's
services after its lease expired. A node whose watchdog cannot fire must not
run services (Patroni's "watchdog required"): the guard takes them down
before the lease can expire (docs/RUNTIME.md, "Faults, one by one").
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pykka
from loguru import logger

from fence.clock import boottime
from fence.unixpath import reachable

MIRROR_GRACE = 0.25  # s past the watchdog's own deadline before the guard concludes it failed to fire
MIN_PET_GAP = 0.1  # s: a client's update pets at once unless a pet went out this recently
GUARD_MAX_SLEEP = 0.5  # s the guard sleeps at most between looks (and at most half its guard_timeout)
# ha-watchdog's status cadence that ha-node asks for (cli/watchdog.py STATUS_EVERY is its default)
WATCHDOG_STATUS_EVERY = 0.25
GUARD_MIN_SLEEP = 0.005  # s past a deadline the guard wakes, so that check() finds it passed


class WatchdogDriver(Protocol):
    def pet(self) -> None: ...

    def disarm(self) -> None: ...

    def close(self) -> None: ...


class DriverError(Exception):
    """The watchdog driver cannot be reached: the node must stop acting."""


class SocketDriver:
    """Client of ``ha-watchdog``: one connection for the node daemon's lifetime, plus the guard."""

    def __init__(
        self,
        path: Path,
        on_lost: Callable[[str], None],
        *,
        guard_timeout: float,
        watchdog_timeout: float,
        connect_timeout: float = 5.0,
        clock: Callable[[], float] = boottime,
    ) -> None:
        self.path = path
        self.on_lost = on_lost
        self.guard_timeout = guard_timeout
        self.watchdog_timeout = watchdog_timeout
        self.clock = clock
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                with reachable(path) as name:  # any length (fence/unixpath.py)
                    self.sock.connect(name)
                break
            except OSError as e:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise DriverError(f"cannot connect to ha-watchdog at {path}: {e}") from e
                time.sleep(0.05)
        self._send_lock = threading.Lock()
        self._closed = threading.Event()
        now = self.clock()
        self.last_status = now  # when ha-watchdog last spoke
        self.remote_armed = False
        self.armed_since: float | None = None  # our first pet since the last disarm
        self.last_pet: float | None = None
        self._guard = threading.Thread(target=self._guard_loop, name=f"watchdog-guard-{path.parent.name}")
        self._guard.daemon = True
        self._guard.start()

    # -- sending ---------------------------------------------------------------------
    def _send(self, b: bytes) -> None:
        try:
            with self._send_lock:
                self.sock.sendall(b)
        except OSError as e:
            raise DriverError(f"ha-watchdog connection lost: {e}") from e

    def pet(self) -> None:
        now = self.clock()
        if self.armed_since is None:
            self.armed_since = now
        self.last_pet = now
        self._send(b"\0")

    def disarm(self) -> None:
        # cleared before sending: the guard may read the watchdog's "d" before we return
        self.armed_since = None
        self.last_pet = None
        self._send(b"V")

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()

    @property
    def confirmed(self) -> bool:
        """ha-watchdog spoke within the guard timeout and says it is armed."""
        return self.remote_armed and self.clock() - self.last_status <= self.guard_timeout

    # -- the guard -------------------------------------------------------------------
    def _guard_loop(self) -> None:
        try:
            why = self._watch()
        except Exception as e:  # SAFETY: a guard that dies must not leave the node unguarded
            why = f"watchdog guard failed: {e!r}"
        if why is not None and not self._closed.is_set():
            self.on_lost(why)

    def _watch(self) -> str | None:
        while not self._closed.is_set():
            # Wakes on each status byte (every STATUS_EVERY) and otherwise at the next deadline
            # of check() (issue #17: it polled every 0.1 s). SAFETY: a pet only moves deadlines
            # later, except the first one after a disarm, which sets one guard_timeout ahead:
            # further than the longest sleep (half of it), so no deadline is slept through.
            self.sock.settimeout(self.next_check_in(self.clock()))
            try:
                data: bytes | None = self.sock.recv(4096)
            except TimeoutError:
                data = None
            except OSError as e:
                return None if self._closed.is_set() else f"ha-watchdog connection failed ({e})"
            now = self.clock()
            if data == b"":
                return "ha-watchdog closed the connection (it died)"
            if data:
                self.last_status = now
                self.remote_armed = data.endswith(b"a")
            why = self.check(now)
            if why is not None:
                return why
        return None

    def next_check_in(self, now: float) -> float:
        """Seconds until check() could first find a reason (a little after), at most GUARD_MAX_SLEEP."""
        deadlines = [self.last_status + self.guard_timeout]
        armed_since, last_pet = self.armed_since, self.last_pet
        if armed_since is not None and not self.remote_armed:
            deadlines.append(armed_since + self.guard_timeout)
        if last_pet is not None:
            deadlines.append(last_pet + self.watchdog_timeout + MIRROR_GRACE)
        longest = min(GUARD_MAX_SLEEP, self.guard_timeout / 2)
        return min(longest, max(GUARD_MIN_SLEEP, min(deadlines) - now + GUARD_MIN_SLEEP))

    def check(self, now: float) -> str | None:
        """Why the watchdog can no longer be trusted to fire, or None (pure, for tests)."""
        silent = now - self.last_status
        if silent > self.guard_timeout:
            return f"no sign of life from ha-watchdog for {silent:.1f}s (killed, stopped or starved)"
        armed_since, last_pet = self.armed_since, self.last_pet
        if armed_since is not None and not self.remote_armed and now - armed_since > self.guard_timeout:
            return f"ha-watchdog has not confirmed being armed {now - armed_since:.1f}s after the first pet"
        if last_pet is not None and now - last_pet > self.watchdog_timeout + MIRROR_GRACE:
            return (
                f"ha-watchdog did not fire {now - last_pet:.1f}s after the last pet"
                f" (its timeout is {self.watchdog_timeout:g}s)"
            )
        return None


@dataclass(frozen=True)
class Open:
    client: str
    at_most: float | None = None  # as Update's


def _stamp(now: float, at_most: float | None) -> float:
    """When a client's update counts from: when handled, but no later than ``at_most``."""
    return now if at_most is None else min(now, at_most)


@dataclass(frozen=True)
class Update:
    """A client renewed its lease. ``at_most``: the latest CLOCK_BOOTTIME time this update may
    count from (the renewal's start plus ``renew_latency_cap``); None: when it is handled."""

    handle: str
    at_most: float | None = None


@dataclass(frozen=True)
class Close:
    handle: str


@dataclass(frozen=True)
class PetTick:
    pass


@dataclass(frozen=True)
class Quorum:
    quorate: bool


@dataclass(frozen=True)
class Disarm:
    """Orderly node shutdown: all clients are closed, release the driver."""


@dataclass(frozen=True)
class Fenced:
    """The node fences itself: never pet again."""


class WatchdogActor(pykka.ThreadingActor):
    def __init__(
        self,
        node: str,
        driver: WatchdogDriver,
        client_timeout: float,
        quorate: bool,
        on_driver_failed: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        self.node = node
        self.driver = driver
        self.client_timeout = client_timeout
        self.quorate = quorate
        self.on_driver_failed = on_driver_failed
        self.clients: dict[str, tuple[str, float]] = {}  # handle -> (client name, last update)
        self.armed = False
        self.failed: str | None = None
        self.last_pet: float | None = None
        self._ids = itertools.count(1)
        self.log = logger.bind(ident=f"{node}/watchdog")

    def on_receive(self, message: object) -> object:
        try:
            return self._handle(message)
        except DriverError as e:
            # SAFETY: without a driver we cannot guarantee self-fencing: stop petting for
            # good and let the node take its services down itself.
            first = self.failed is None
            self.failed = str(e)
            self.log.error(f"watchdog driver failed: {e}")
            if first and self.on_driver_failed is not None:
                self.on_driver_failed(f"watchdog driver failed: {e}")
            return None

    def _handle(self, message: object) -> object:
        now = boottime()
        if isinstance(message, Open):
            handle = f"WD:{self.node}:{message.client}:{next(self._ids)}"
            self.clients[handle] = (message.client, _stamp(now, message.at_most))
            self.log.info(f"watchdog active ({message.client})")
            self._pet_if_allowed(now)
            return handle
        if isinstance(message, Update):
            entry = self.clients.get(message.handle)
            if entry is None:
                # a told update has nobody to answer: a raise would stop this actor (and fence
                # the node). SAFETY: an unknown handle is no client and never allows a pet.
                self.log.error(f"update of an unknown watchdog handle '{message.handle}' ignored")
                return None
            # SAFETY: the update counts from no later than its renewal allows, even when this
            # actor handles it late (a busy host): the pets it allows end client_timeout after
            # that, as docs/RUNTIME.md's argument needs (step 1: before t + margin/2).
            self.clients[message.handle] = (entry[0], _stamp(now, message.at_most))
            # Pet at once, not only at the next PetTick: the watchdog's deadline then starts
            # from the renewal that allowed it, as late as the rule permits (a slow renewal
            # on a loaded host costs less of watchdog_timeout). SAFETY: the same gate as
            # every pet (_pet_if_allowed): each client updated within client_timeout.
            if self.last_pet is None or now - self.last_pet >= MIN_PET_GAP:
                self._pet_if_allowed(now)
            return None
        if isinstance(message, Close):
            entry = self.clients.pop(message.handle, None)
            if entry is not None:
                self.log.info(f"watchdog closed ({entry[0]})")
            if not self.clients and self.armed and self.failed is None:
                self.driver.disarm()
                self.armed = False
            return None
        if isinstance(message, Quorum):
            if self.quorate and not message.quorate:
                self.log.warning("quorum lost: stop petting the watchdog")
            self.quorate = message.quorate
            return None
        if isinstance(message, PetTick):
            self._pet_if_allowed(now)
            return None
        if isinstance(message, Disarm):
            self.clients.clear()
            if self.armed and self.failed is None:
                self.driver.disarm()
                self.armed = False
            return None
        if isinstance(message, Fenced):
            self.failed = self.failed or "the node fenced itself"
            return None
        return None

    def _pet_if_allowed(self, now: float) -> None:
        if not self.clients or self.failed is not None or not self.quorate:
            return
        # SAFETY: a client that stopped updating (its lease renewal failed or its
        # thread hangs) stops the pets, so the node fences itself.
        if any(now - last > self.client_timeout for _, last in self.clients.values()):
            return
        self.driver.pet()
        self.armed = True
        self.last_pet = now

    def on_failure(self, exception_type: object, exception_value: object, traceback: object) -> None:
        # SAFETY: the actor is dead, so nothing pets any more: ha-watchdog fires and
        # fences the node. Say so loudly rather than dying silently.
        self.log.critical(f"watchdog actor died ({exception_value!r}): pets stop, the node will be fenced")

    def on_stop(self) -> None:
        self.driver.close()


class WatchdogClient:
    """The Env's view of the WatchdogActor (blocking asks from the CRM/LRM threads)."""

    def __init__(self, ref: pykka.ActorRef[WatchdogActor], timeout: float = 5.0) -> None:
        self.ref = ref
        self.timeout = timeout

    def open(self, client: str, at_most: float | None = None) -> str:
        handle = self.ref.ask(Open(client, at_most), timeout=self.timeout)
        assert isinstance(handle, str)
        return handle

    def update(self, handle: str, at_most: float | None = None) -> None:
        # Told, not asked (issue #17: the daemon's thread does not wait and wake for the
        # answer). SAFETY: ``at_most`` bounds when it counts, however late it is handled.
        self.ref.tell(Update(handle, at_most))

    def close(self, handle: str) -> None:
        self.ref.ask(Close(handle), timeout=self.timeout)
