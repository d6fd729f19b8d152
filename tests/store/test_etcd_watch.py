"""The etcd store's watch (store/etcd_watch.py) against a real etcd: wake-ups, leases, reconnects, compaction.

One real 3-member cluster for the module; a test that kills a member starts it again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from actors.node import StoreHealth
from store.base import ABSENT, StoreError, VersionConflict, open_watch
from store.etcd_gateway import b64, prefix_end
from store.etcd_harness import EtcdCluster
from store.etcd_watch import EtcdWatcher, Subscription, WatchEvent
from store.etcdstore import EtcdStore
from tests.store.etcd_fixtures import cluster_fixture, unique_cluster_name

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def etcd3() -> Iterator[EtcdCluster]:
    yield from cluster_fixture(3)


@pytest.fixture
def cluster(etcd3: EtcdCluster) -> Iterator[EtcdCluster]:
    etcd3.wait_healthy(15)
    yield etcd3
    dead = [i for i, m in enumerate(etcd3.members) if not m.running]
    if dead:
        etcd3.restart(*dead)
    etcd3.wait_healthy(15)


@pytest.fixture
def name(cluster: EtcdCluster) -> str:
    return unique_cluster_name()


def stores(cluster: EtcdCluster, name: str, n: int = 2) -> list[EtcdStore]:
    return [EtcdStore.from_url(cluster.url(name)) for _ in range(n)]


def until(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def settle(sub: Subscription) -> None:
    """Wait until the stream is up and drain the wake-ups of its creation."""
    assert until(lambda: sub.live), "the watch never came up"
    while sub.wait(0.3):
        pass


def create_once(st: EtcdStore, name: str) -> None:
    """Create the record, retried while the members elect a leader (a lost answer may have created it)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            st.write(name, b"1", expect_version=ABSENT)
            return
        except VersionConflict:
            return  # an earlier try that timed out did create it
        except StoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def watch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("etcd-watch")]


def test_a_write_by_another_client_wakes_the_watch(cluster: EtcdCluster, name: str) -> None:
    watcher, writer = stores(cluster, name)
    sub = watcher.watch()
    try:
        assert open_watch(watcher) is not None  # the interface the node and the publisher use
        settle(sub)
        assert not sub.wait(0.3)  # nothing written: it sleeps
        token = watcher.changed_since(None).token
        threading.Timer(0.2, lambda: writer.write("resources.cfg", b"x")).start()
        assert sub.wait(10.0), "the write of another client was not delivered"
        assert watcher.changed_since(token).names == frozenset({"resources.cfg"})
        for change in (
            lambda: writer.append("crm_commands", "migrate vm:1 n2"),
            lambda: writer.take("crm_commands"),
            lambda: writer.delete("resources.cfg"),
        ):
            while sub.wait(0.1):
                pass
            change()
            assert sub.wait(10.0), "an append, take or delete was not delivered"
        while sub.wait(0.1):
            pass
        assert writer.acquire_lease("ha_manager_lock", "n2#a", 5.0)  # a lease is no record change
        assert not sub.wait(0.3)
    finally:
        sub.close()
        watcher.close()
        writer.close()


def test_the_watch_notes_lease_revisions_as_a_read_would(cluster: EtcdCluster, name: str) -> None:
    watcher, holder = stores(cluster, name)
    sub = watcher.watch()
    try:
        settle(sub)
        assert holder.acquire_lease("ha_agent_n2_lock", "n2#a", 5.0)
        mod = holder._held["ha_agent_n2_lock"].mod
        assert until(lambda: watcher._seen.get("ha_agent_n2_lock", (0, 0.0))[0] == mod), "renewal not seen"
        t_first = watcher._seen["ha_agent_n2_lock"][1]
        # a read of the same revision keeps the first-seen time of the watch: the take-over clock
        info = watcher.lease_info("ha_agent_n2_lock")
        assert info is not None and info.holder == "n2#a"
        assert watcher._seen["ha_agent_n2_lock"] == (mod, t_first)
        assert holder.release_lease("ha_agent_n2_lock", "n2#a")
        assert until(lambda: "ha_agent_n2_lock" not in watcher._seen), "the release was not seen"
    finally:
        sub.close()
        watcher.close()
        holder.close()


def test_the_watch_survives_a_member_restart_without_losing_a_write(cluster: EtcdCluster, name: str) -> None:
    seen: list[bytes] = []

    def on_events(events: list[WatchEvent]) -> bool:
        seen.extend(e.key for e in events)
        return True

    writer = EtcdStore.from_url(cluster.url(name, indices=[1, 2]))
    prefix = f"/pyha/{name}/changes/".encode()
    w = EtcdWatcher(
        [(m.spec.host, m.spec.client_port) for m in cluster.members],
        prefix,
        prefix_end(prefix),
        ssl_context=writer._gw.ssl_context,
        on_events=on_events,
    )
    sub = w.subscribe()
    try:
        settle(sub)
        assert w._idx == 0  # the stream is on member 0
        cluster.kill(0)
        cluster.wait_leader(15)
        create_once(writer, "while_down")  # the other two members still make a majority
        assert until(lambda: prefix + b"while_down" in seen, 15), "a write while the stream broke was lost"
        assert w.reconnects >= 1
        cluster.restart(0)
        cluster.wait_healthy(15)
        assert until(lambda: w.live)
        writer.write("after_restart", b"2")
        assert until(lambda: prefix + b"after_restart" in seen, 15)
        assert seen.count(prefix + b"while_down") == 1  # a reconnect starts after the last revision seen
    finally:
        sub.close()
        w.close()
        writer.close()
    assert not w.running


def test_a_whole_cluster_restart_reconnects_the_store_watch(cluster: EtcdCluster, name: str) -> None:
    watcher, writer = stores(cluster, name)
    sub = watcher.watch()
    try:
        settle(sub)
        for i in range(3):
            cluster.kill(i)
        assert until(lambda: not sub.live, 15), "the watch did not notice the members were gone"
        cluster.restart(0, 1, 2)
        cluster.wait_healthy(20)
        assert until(lambda: sub.live, 20), "the watch did not come back"
        while sub.wait(0.3):
            pass
        writer.write("resources.cfg", b"after")
        assert sub.wait(10.0)
    finally:
        sub.close()
        watcher.close()
        writer.close()


def test_a_compacted_start_revision_resyncs_from_now(cluster: EtcdCluster, name: str) -> None:
    st = EtcdStore.from_url(cluster.url(name))
    try:
        st.write("a", b"1")
        st.write("a", b"2")
        rev = int(st.changed_since(None).token.rpartition(":")[2])
        st._gw.call("/v3/kv/compaction", {"revision": str(rev)}, deadline=st._deadline(), mutating=True)
        prefix = f"/pyha/{name}/changes/".encode()
        got: list[WatchEvent] = []
        w = EtcdWatcher(
            st._gw.endpoints,
            prefix,
            prefix_end(prefix),
            ssl_context=st._gw.ssl_context,
            on_events=lambda evs: got.extend(evs) or True,
            start_revision=rev - 1,  # compacted away: the stream cannot start there
        )
        sub = w.subscribe()
        try:
            assert sub.wait(10.0)  # the resync wakes the subscriber: it re-reads with changed_since
            assert until(lambda: w.resyncs == 1 and w.live)
            assert w.next_revision is not None and w.next_revision > rev
            st.write("b", b"3")
            assert until(lambda: any(e.key == prefix + b"b" for e in got))
        finally:
            sub.close()
            w.close()
    finally:
        st.close()


def test_closing_the_store_stops_the_watch_thread(cluster: EtcdCluster, name: str) -> None:
    before = len(watch_threads())
    st = EtcdStore.from_url(cluster.url(name))
    subs = [st.watch(), st.watch()]  # one thread for every subscriber of a store
    settle(subs[0])
    assert len(watch_threads()) == before + 1
    subs[0].close()
    t0 = time.monotonic()
    st.close()
    assert time.monotonic() - t0 < 5.0
    assert len(watch_threads()) == before
    assert not subs[1].live
    subs[1].close()
    # the store can still be used, and watched again
    sub = st.watch()
    settle(sub)
    sub.close()
    st.close()
    assert len(watch_threads()) == before


def test_a_lease_renewal_is_a_store_health_probe(cluster: EtcdCluster, name: str) -> None:
    st = EtcdStore.from_url(cluster.url(name))
    try:
        health = StoreHealth(0.5, contact=st.quorum_contact)
        assert not health.healthy()  # nothing reached etcd yet
        t0 = time.monotonic()
        assert st.acquire_lease("ha_agent_n1_lock", "n1#a", 5.0)  # a transaction: a majority answered
        assert t0 <= st.quorum_contact() <= time.monotonic()
        assert health.healthy()
        time.sleep(0.6)
        assert not health.healthy()
        # a keep-alive of the etcd lease is answered by the leader alone: no proof of a majority
        lease_id = st._backstops["ha_agent_n1_lock"].lease_id
        st._gw.call("/v3/lease/keepalive", {"ID": str(lease_id)}, deadline=st._deadline(), mutating=False)
        assert not health.healthy()
        st._gw.call("/v3/kv/range", {"key": b64(b"x")}, deadline=st._deadline(), mutating=False)
        assert health.healthy()
    finally:
        st.close()
