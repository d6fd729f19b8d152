"""The event stream without a cluster: the pure diff, and a publisher over a dir store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
import zmq

from actors.events import EventPublisher, diff_events
from admin.cluster import ClusterConfig
from ha.records import LrmStatus, ManagerStatus, ServiceData
from store.base import Changes
from store.dirstore import DirStore
from store.records import write_lrm_status, write_manager_status

pytestmark = pytest.mark.timeout(30)


def ms(
    ts: float, master: str | None, nodes: dict[str, str], services: dict[str, tuple[str, str]]
) -> ManagerStatus:
    return ManagerStatus(
        master_node=master,
        timestamp=ts,
        node_status=dict(nodes),
        service_status={sid: ServiceData(state=st, node=n) for sid, (st, n) in services.items()},
    )


def test_diff_events_master_nodes_fencing_services_lrm() -> None:
    a = ms(1, "n1", {"n1": "online", "n2": "online"}, {"vm:100": ("started", "n2")})
    b = ms(2, "n2", {"n1": "fence", "n2": "online"}, {"vm:100": ("fence", "n1"), "vm:101": ("stopped", "n2")})
    c = ms(3, "n2", {"n1": "unknown", "n2": "online"}, {"vm:101": ("stopped", "n2")})
    assert diff_events(None, a, {}, {}) == []  # the first view is the baseline
    evs = diff_events(a, b, {"n1": ("active", "active")}, {"n1": (None, None)})
    assert [e["type"] for e in evs] == ["master", "node", "fence", "service", "service", "lrm"]
    assert evs[0] == {"type": "master", "old": "n1", "new": "n2"}
    assert evs[2] == {"type": "fence", "node": "n1", "phase": "pending"}
    assert evs[3]["sid"] == "vm:100" and evs[3]["old_state"] == "started" and evs[3]["state"] == "fence"
    assert evs[4]["old_state"] is None and evs[4]["state"] == "stopped"
    evs = diff_events(b, c, {}, {})
    assert {"type": "fence", "node": "n1", "phase": "done"} in evs
    assert {"type": "node", "node": "n1", "old": "fence", "new": "unknown"} in evs
    assert any(e["type"] == "service" and e["sid"] == "vm:100" and e["state"] is None for e in evs)


def test_publisher_streams_store_changes_and_fed_writes(tmp_path: Path) -> None:
    cluster = ClusterConfig(root=tmp_path, cluster="t", nodes={"n1": "tcp://127.0.0.1:1"}, curve=False)
    store = DirStore(tmp_path / "store")
    write_manager_status(store, ms(1, "n1", {"n1": "online"}, {"vm:100": ("started", "n1")}))
    pub = EventPublisher("n1", cluster, store, lambda: True, interval=0.02, heartbeat=0.2)
    pub.start()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    try:
        assert pub.endpoint is not None and pub.endpoint.startswith("tcp://127.0.0.1:")
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(pub.endpoint)

        def next_events(
            n: int, types: tuple[str, ...] = ("service",), wait: float = 5
        ) -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            deadline = time.monotonic() + wait
            while len(out) < n and time.monotonic() < deadline:
                if sub.poll(100):
                    topic, body = sub.recv_multipart()
                    ev = msgpack.unpackb(body)
                    assert topic.decode() == ev["type"] and ev["source"] == "n1" and ev["cluster"] == "t"
                    if ev["type"] in types:
                        out.append(ev)
            return out

        assert next_events(1, ("heartbeat",))[0]["master"] == "n1"  # connected and alive
        # the master's hook feeds every write: the short-lived request_stop is not folded
        mid = ms(2, "n1", {"n1": "online"}, {"vm:100": ("request_stop", "n1")})
        end = ms(3, "n1", {"n1": "online"}, {"vm:100": ("stopped", "n1")})
        write_manager_status(store, mid)
        pub.feed(mid)
        write_manager_status(store, end)
        pub.feed(end)
        evs = next_events(2)
        assert [(e["old_state"], e["state"]) for e in evs] == [("started", "request_stop"),
                                                               ("request_stop", "stopped")]  # fmt: skip
        assert [e["seq"] for e in evs] == sorted(e["seq"] for e in evs)
        # without the hook (another node is master now), the publisher follows the store
        time.sleep(2.1)  # actors.events.FEED_HOLD
        write_manager_status(store, ms(4, "n2", {"n1": "online"}, {"vm:100": ("stopped", "n1")}))
        (master,) = next_events(1, ("master",))
        assert master["old"] == "n1" and master["new"] == "n2"
        # a late feed of an older status is ignored (no flapping back)
        pub.feed(end)
        assert next_events(1, ("master", "service"), wait=0.5) == []
    finally:
        sub.close(linger=0)
        ctx.term()
        pub.stop()
        store.close()


class CountingStore(DirStore):
    """A dir store that counts the publisher's looks at its change journal."""

    looks = 0

    def changed_since(self, token: str | None) -> Changes:
        CountingStore.looks += 1
        return super().changed_since(token)


@pytest.fixture
def counting_pub(tmp_path: Path) -> Iterator[tuple[CountingStore, EventPublisher, zmq.Socket[bytes]]]:
    """A publisher over a counting dir store (one manager_status written) and an unconnected SUB."""
    cluster = ClusterConfig(root=tmp_path, cluster="t", nodes={"n1": "tcp://127.0.0.1:1"}, curve=False)
    store = CountingStore(tmp_path / "store")
    write_manager_status(store, ms(1, "n1", {"n1": "online"}, {"vm:100": ("started", "n1")}))
    pub = EventPublisher("n1", cluster, store, lambda: True, interval=0.02, heartbeat=0.2)
    pub.start()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    try:
        assert pub.endpoint is not None
        yield store, pub, sub
    finally:
        sub.close(linger=0)
        ctx.term()
        pub.stop()
        store.close()


def test_publisher_sleeps_at_rest_and_wakes_on_a_store_write(counting_pub) -> None:  # type: ignore[no-untyped-def]
    # issue #17: it polled the store every `interval` (50 ms); on a dir store it now
    # sleeps on inotify until the journal is written (or its safety_poll passed)
    store, pub, sub = counting_pub
    assert pub.endpoint is not None
    sub.setsockopt(zmq.SUBSCRIBE, b"master")
    sub.connect(pub.endpoint)
    time.sleep(0.5)  # the first look, the subscription
    before = CountingStore.looks
    time.sleep(1.5)
    assert CountingStore.looks - before <= 3  # polling every 20 ms: about 75
    t0 = time.monotonic()
    write_manager_status(store, ms(2, "n2", {"n1": "online"}, {"vm:100": ("started", "n1")}))
    assert sub.poll(5000)
    assert time.monotonic() - t0 < 0.5  # the write woke it, not the next probe
    ev = msgpack.unpackb(sub.recv_multipart()[1])
    assert (ev["old"], ev["new"]) == ("n1", "n2")
    # an LRM's status alone: only that record is read again, and still announced
    sub.setsockopt(zmq.SUBSCRIBE, b"lrm")
    time.sleep(0.2)
    write_lrm_status(store, "n1", LrmStatus(state="active", mode="active", timestamp=3))
    assert sub.poll(5000)
    ev = msgpack.unpackb(sub.recv_multipart()[1])
    assert (ev["type"], ev["node"], ev["state"], ev["mode"]) == ("lrm", "n1", "active", "active")
    # a busy store (a cluster starting) is read at most every `interval`, as when it polled
    before, t0 = CountingStore.looks, time.monotonic()
    for i in range(300):
        write_lrm_status(store, "n1", LrmStatus(state="active", mode="active", timestamp=4 + i))
        time.sleep(0.002)
    spent = time.monotonic() - t0
    assert CountingStore.looks - before <= spent / 0.02 + 3, (CountingStore.looks - before, spent)


def test_without_a_subscriber_the_store_is_not_followed(counting_pub) -> None:  # type: ignore[no-untyped-def]
    """Issue #15: nobody listens, so no record is read for events (every node parsed every write)."""
    store, pub, sub = counting_pub
    assert pub.endpoint is not None
    time.sleep(0.3)
    before = CountingStore.looks
    for i in range(5):  # writes nobody subscribed to
        write_manager_status(store, ms(2 + i, "n1", {"n1": "online"}, {"vm:100": ("started", "n1")}))
        time.sleep(0.1)
    time.sleep(0.3)
    assert CountingStore.looks == before
    # a subscriber comes: the store is followed from now on, from a fresh view
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(pub.endpoint)
    assert sub.poll(3000)  # a heartbeat: subscribed
    while sub.poll(100):
        ev = msgpack.unpackb(sub.recv_multipart()[1])
        assert ev["type"] in ("heartbeat", "quorum"), ev  # nothing from before the subscription
    assert CountingStore.looks > before
    write_manager_status(store, ms(20, "n3", {"n1": "online"}, {"vm:100": ("started", "n1")}))
    deadline = time.monotonic() + 5
    seen = []
    while time.monotonic() < deadline and not any(e["type"] == "master" for e in seen):
        if sub.poll(200):
            seen.append(msgpack.unpackb(sub.recv_multipart()[1]))
    assert any(e["type"] == "master" and e["new"] == "n3" for e in seen), seen
    # the subscriber leaves: the store is not followed any more
    sub.close(linger=0)
    time.sleep(0.5)
    after = CountingStore.looks
    write_manager_status(store, ms(21, "n1", {"n1": "online"}, {}))
    time.sleep(0.5)
    assert CountingStore.looks == after


def test_without_a_subscriber_no_timer_wakes_the_publisher(tmp_path: Path) -> None:
    """Issue #17: nobody listens, so no quorum look, heartbeat or store probe; a subscriber
    gets the heartbeat and the quorum from then on."""
    cluster = ClusterConfig(root=tmp_path, cluster="t", nodes={"n1": "tcp://127.0.0.1:1"}, curve=False)
    store = DirStore(tmp_path / "store")
    write_manager_status(store, ms(1, "n1", {"n1": "online"}, {}))
    looks: list[float] = []

    def quorate() -> bool:
        looks.append(time.monotonic())
        return True

    pub = EventPublisher("n1", cluster, store, quorate, interval=0.02, heartbeat=0.2)
    pub.start()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    try:
        time.sleep(0.3)  # the first turn
        before = len(looks)
        time.sleep(1.6)  # three quorum looks (every 0.5 s) before
        assert len(looks) == before, "a publisher nobody listens to looked at the quorum"
        assert pub.endpoint is not None
        sub.setsockopt(zmq.SUBSCRIBE, b"heartbeat")
        sub.connect(pub.endpoint)
        assert sub.poll(3000)
        ev = msgpack.unpackb(sub.recv_multipart()[1])
        assert ev["type"] == "heartbeat" and ev["quorate"] is True and ev["master"] == "n1"
        assert len(looks) > before
        assert sub.poll(3000)  # and they go on while someone listens
    finally:
        sub.close(linger=0)
        ctx.term()
        pub.stop()
        store.close()
