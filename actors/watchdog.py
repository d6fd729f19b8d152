"""The WatchdogActor: multiplexes the node's watchdog clients onto the watchdog driver.

Clients are the CRM (while master) and the LRM (while holding its agent
lease), exactly as with the reference's watchdog-mux (BEHAVIOUR.md §3.1.5,
§3.2.7). The actor pets the driver every ``pet_interval`` only while

- the node is quorate (a ``QuorumLost`` message stops petting at once), and
- every open client updated within ``client_timeout``.

With no client open the driver is disarmed (magic close). Drivers:
:class:`SocketDriver` talks to ``ha-watchdog`` (cli/watchdog.py) over its
UNIX socket; :class:`DeviceDriver` writes ``/dev/watchdog`` where it exists.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pykka
from loguru import logger


class WatchdogDriver(Protocol):
    def pet(self) -> None: ...

    def disarm(self) -> None: ...

    def close(self) -> None: ...


class DriverError(Exception):
    """The watchdog driver cannot be reached: the node must stop acting."""


class SocketDriver:
    """Client of ``ha-watchdog``: one connection for the node daemon's lifetime."""

    def __init__(self, path: Path, connect_timeout: float = 5.0) -> None:
        self.path = path
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except OSError as e:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise DriverError(f"cannot connect to ha-watchdog at {path}: {e}") from e
                time.sleep(0.05)

    def _send(self, b: bytes) -> None:
        try:
            self.sock.sendall(b)
        except OSError as e:
            raise DriverError(f"ha-watchdog connection lost: {e}") from e

    def pet(self) -> None:
        self._send(b"\0")

    def disarm(self) -> None:
        self._send(b"V")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class DeviceDriver:
    """The kernel watchdog device (``/dev/watchdog``), where present."""

    def __init__(self, path: str = "/dev/watchdog") -> None:
        self.fd = os.open(path, os.O_WRONLY)

    def pet(self) -> None:
        os.write(self.fd, b"\0")

    def disarm(self) -> None:
        os.write(self.fd, b"V")

    def close(self) -> None:
        os.close(self.fd)


@dataclass(frozen=True)
class Open:
    client: str


@dataclass(frozen=True)
class Update:
    handle: str


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


class WatchdogActor(pykka.ThreadingActor):
    def __init__(self, node: str, driver: WatchdogDriver, client_timeout: float, quorate: bool) -> None:
        super().__init__()
        self.node = node
        self.driver = driver
        self.client_timeout = client_timeout
        self.quorate = quorate
        self.clients: dict[str, tuple[str, float]] = {}  # handle -> (client name, last update)
        self.armed = False
        self.failed: str | None = None
        self._ids = itertools.count(1)
        self.log = logger.bind(ident=f"{node}/watchdog")

    def on_receive(self, message: object) -> object:
        try:
            return self._handle(message)
        except DriverError as e:
            # SAFETY: without a driver we cannot guarantee self-fencing; report it
            # and stop petting for good (the supervisor takes the node down).
            self.failed = str(e)
            self.log.error(f"watchdog driver failed: {e}")
            return None

    def _handle(self, message: object) -> object:
        now = time.monotonic()
        if isinstance(message, Open):
            handle = f"WD:{self.node}:{message.client}:{next(self._ids)}"
            self.clients[handle] = (message.client, now)
            self.log.info(f"watchdog active ({message.client})")
            self._pet_if_allowed(now)
            return handle
        if isinstance(message, Update):
            entry = self.clients.get(message.handle)
            if entry is None:
                raise KeyError(f"no such watchdog handle '{message.handle}'")
            self.clients[message.handle] = (entry[0], now)
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

    def open(self, client: str) -> str:
        handle = self.ref.ask(Open(client), timeout=self.timeout)
        assert isinstance(handle, str)
        return handle

    def update(self, handle: str) -> None:
        self.ref.ask(Update(handle), timeout=self.timeout)

    def close(self, handle: str) -> None:
        self.ref.ask(Close(handle), timeout=self.timeout)
