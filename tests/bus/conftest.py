"""Shared fixtures for the bus tests: free ports, key sets, running clusters."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from admin.ports import free_port
from bus.codec import Envelope
from bus.keys import CurveKeys, generate
from bus.membership import Membership
from bus.transport import Transport, TransportConfig

NAMES = ("a", "b", "c", "d", "e")
FAST = TransportConfig(heartbeat_interval=0.05, peer_timeout=0.3)


def wait_until(pred: Callable[[], object], timeout: float = 5.0, interval: float = 0.005) -> float:
    """Poll ``pred`` until true; return the elapsed time or fail the test."""
    start = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


class Recorder:
    """A subscriber that keeps what it got, thread-safely."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[Envelope] = []

    def __call__(self, env: Envelope) -> None:
        with self._lock:
            self.items.append(env)

    def of(self, kind: type) -> list[Envelope]:
        with self._lock:
            return [e for e in self.items if isinstance(e.body, kind)]

    def bodies(self, kind: type) -> list[object]:
        return [e.body for e in self.of(kind)]


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    for name in (*NAMES, "cli"):
        generate(d, name)
    return d


class Cluster:
    """Up to five transports on loopback ports; everything stopped at teardown."""

    def __init__(self, key_dir: Path, size: int, curve: bool, config: TransportConfig) -> None:
        self.key_dir, self.curve, self.config = key_dir, curve, config
        self.names = NAMES[:size]
        self.membership = Membership.of((n, f"tcp://127.0.0.1:{free_port()}") for n in self.names)
        self.nodes: dict[str, Transport] = {}
        self.recorders: dict[str, Recorder] = {}

    def make(self, name: str, config: TransportConfig | None = None) -> Transport:
        keys = CurveKeys.load(self.key_dir, name, self.names) if self.curve else None
        t = Transport(
            name, self.membership, cluster="test", curve=self.curve, keys=keys, config=config or self.config
        )
        rec = Recorder()
        t.subscribe(rec)
        self.nodes[name], self.recorders[name] = t, rec
        return t

    def start(self, *names: str) -> None:
        for n in names or self.names:
            self.make(n).start()

    def stop(self, name: str) -> None:
        self.nodes[name].stop()

    def close(self) -> None:
        for t in self.nodes.values():
            t.stop()

    def all_quorate(self, names: tuple[str, ...] | None = None) -> bool:
        return all(self.nodes[n].quorate for n in names or self.names)

    def full_mesh(self, names: tuple[str, ...] | None = None) -> bool:
        names = names or self.names
        return all(self.nodes[n].peers_up() == set(names) - {n} for n in names)


@pytest.fixture
def make_cluster(key_dir: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def factory(size: int = 3, *, curve: bool = True, config: TransportConfig = FAST) -> Cluster:
        c = Cluster(key_dir, size, curve, config)
        made.append(c)
        return c

    yield factory
    for c in made:
        c.close()
    # SAFETY for the suite: a leaked I/O thread would mean stop() is broken.
    leaked = [t.name for t in threading.enumerate() if t.name.startswith("bus-io-")]
    assert not leaked, f"bus I/O threads still running: {leaked}"
