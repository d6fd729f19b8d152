"""Stand-ins for a live Env's bus and watchdog: tests drive ``actors.env.LiveEnv`` on a real store."""

from __future__ import annotations

from actors.env import LiveEnv, NodeContext
from store.base import Store

NODES = ["n1", "n2", "n3"]


class Quorate:
    """A bus that always has its majority and sees every node."""

    def quorate(self) -> bool:
        return True

    def peers_up(self) -> frozenset[str]:
        return frozenset(NODES)


class NoWatchdog:
    def open(self, client: str, at_most: float | None = None) -> str:
        return client

    def update(self, handle: str, at_most: float | None = None) -> None:
        pass

    def close(self, handle: str) -> None:
        pass


def context(store: Store, node: str = "n1", holder: str = "n1#t") -> NodeContext:
    return NodeContext(
        node=node, nodes=list(NODES), store=store, membership=Quorate(), watchdog=NoWatchdog(),
        plugins={}, lease_ttl=5.0, holder=holder,
    )  # fmt: skip


def live_env(store: Store, node: str = "n1", holder: str = "n1#t", daemon: str = "crm") -> LiveEnv:
    return LiveEnv(context(store, node, holder), daemon)


class Clock:
    """A clock the test moves: call it for the time, set ``now`` to move it."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
