"""The etcd backend when etcd members die: one lost, quorum lost, the leader changes.

One real 3-member cluster for the module; every test leaves all members running.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from store import StoreError
from store.etcd_harness import EtcdCluster
from store.etcdstore import EtcdStore
from tests.store.etcd_fixtures import cluster_fixture, unique_cluster_name

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def etcd3() -> Iterator[EtcdCluster]:
    yield from cluster_fixture(3)


@pytest.fixture
def cluster(etcd3: EtcdCluster) -> Iterator[EtcdCluster]:
    etcd3.wait_healthy(15)
    yield etcd3
    etcd3.restart(*range(etcd3.size))
    etcd3.wait_healthy(15)


def store_for(c: EtcdCluster, name: str, timeout: float = 1.0) -> EtcdStore:
    return EtcdStore.from_url(c.url(name, timeout=timeout))


def cas(st: EtcdStore) -> str:
    rec = st.read("c")
    return st.write("c", b"x", expect_version=rec.version if rec is not None else "")


def every_op(st: EtcdStore, i: int) -> list[tuple[str, Callable[[], object]]]:
    return [
        ("write", lambda: st.write(f"r{i % 3}", str(i).encode())),
        ("read", lambda: st.read("r0")),
        ("cas", lambda: cas(st)),
        ("append", lambda: st.append("crm_commands", f"cmd {i}")),
        ("take", lambda: st.take("crm_commands")),
        ("list", st.list),
        ("changed", lambda: st.changed_since(None)),
        ("renew", lambda: st.acquire_lease("ha_agent_n1_lock", "n1", 5) or pytest.fail("lease lost")),
        ("lease_info", lambda: st.lease_info("ha_agent_n1_lock")),
    ]


def test_follower_loss_is_invisible(cluster: EtcdCluster) -> None:
    leader = cluster.wait_leader()
    victim = next(i for i in range(cluster.size) if i != leader)
    st = store_for(cluster, unique_cluster_name())
    st._gw._preferred = victim  # the client is talking to the member that dies
    assert st.acquire_lease("ha_agent_n1_lock", "n1", 5)
    st.write("r0", b"0")
    cluster.kill(victim)
    for i in range(5):
        for what, op in every_op(st, i):
            t0 = time.monotonic()
            op()
            assert time.monotonic() - t0 < 0.8, what
    assert st._gw._preferred != victim
    st.close()


def test_leader_loss_heals_within_an_election(cluster: EtcdCluster) -> None:
    leader = cluster.wait_leader()
    st = store_for(cluster, unique_cluster_name(), timeout=1.0)
    st._gw._preferred = leader
    observer = store_for(cluster, st.cluster)
    assert st.acquire_lease("ha_agent_n1_lock", "n1", 5)
    cluster.kill(leader)
    t_kill = time.monotonic()
    errors: list[str] = []
    healed = None
    while time.monotonic() - t_kill < 8:
        try:
            t0 = time.monotonic()
            st.write("r0", b"x")
            assert st.acquire_lease("ha_agent_n1_lock", "n1", 5)  # renewed, not lost
            healed = time.monotonic() - t_kill
            break
        except StoreError as e:
            errors.append(str(e))
            assert time.monotonic() - t0 < 1.0 + 0.5  # each failure is bounded by the timeout
    assert healed is not None, errors
    assert healed < 5, (healed, errors)  # ~ one election (1-2 s with the default 1 s timeout)
    for i in range(3):
        for _what, op in every_op(st, i):
            op()
    info = observer.lease_info("ha_agent_n1_lock")
    assert info is not None
    assert info.holder == "n1"
    st.close()
    observer.close()


def test_quorum_loss_fails_fast_and_renews_nothing(cluster: EtcdCluster) -> None:
    name = unique_cluster_name()
    st = store_for(cluster, name, timeout=0.4)
    other = store_for(cluster, name, timeout=0.4)
    assert st.acquire_lease("ha_agent_n1_lock", "n1", 2)
    st.write("r0", b"before")
    lease_rev = raw_mod_revision(st, f"/pyha/{name}/leases/ha_agent_n1_lock")
    leader = cluster.wait_leader()
    survivor = next(i for i in range(cluster.size) if i != leader)
    for i in range(cluster.size):
        if i != survivor:
            cluster.kill(i)
    # at once (the survivor still believes in its dead leader), then once it knows better
    for ops in (every_op(st, 0), every_op(st, 1)[:2]):
        for what, op in ops:
            t0 = time.monotonic()
            with pytest.raises(StoreError) as ei:
                op()
            took = time.monotonic() - t0
            assert took < 0.4 + 0.4, (what, took)
            assert "etcd" in str(ei.value)
        time.sleep(0.3)
    cluster.restart(*range(cluster.size))
    cluster.wait_healthy(15)
    rec = st.read("r0")
    assert rec is not None
    assert rec.data == b"before"
    # SAFETY: no renewal went through while the quorum was gone (same revision), and the
    # lease is not taken over early: another node still watches that revision for a ttl.
    assert raw_mod_revision(st, f"/pyha/{name}/leases/ha_agent_n1_lock") == lease_rev
    t_seen = time.monotonic()
    assert not other.acquire_lease("ha_agent_n1_lock", "master", 2)
    deadline = time.monotonic() + 5
    while not other.acquire_lease("ha_agent_n1_lock", "master", 2):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert time.monotonic() - t_seen >= 2
    assert not st.acquire_lease("ha_agent_n1_lock", "n1", 2)  # and the old holder lost it
    st.close()
    other.close()


def raw_mod_revision(st: EtcdStore, key: str) -> int:
    body = {"key": base64.b64encode(key.encode()).decode()}
    resp = st._gw.call("/v3/kv/range", body, deadline=st._deadline(), mutating=False)
    return int(resp["kvs"][0]["mod_revision"])


def test_leader_change_never_gives_one_lease_to_two_holders(cluster: EtcdCluster) -> None:
    """A renews, B keeps trying; the leader dies and comes back; A stops; B gets it, never early."""
    name = unique_cluster_name()
    ttl = 2.0
    a, b = store_for(cluster, name), store_for(cluster, name)
    a_ok: list[tuple[float, float]] = []  # (t0 before the call, t1 after it) of successes
    b_ok: list[tuple[float, float]] = []
    stop_a = threading.Event()
    done = threading.Event()
    failures: list[BaseException] = []

    def run(
        st: EtcdStore, holder: str, log: list[tuple[float, float]], pause: float, stop: threading.Event
    ) -> None:
        try:
            while not stop.is_set() and not done.is_set():
                t0 = time.monotonic()
                try:
                    ok = st.acquire_lease("ha_manager_lock", holder, ttl)
                except StoreError:
                    ok = False
                if ok:
                    log.append((t0, time.monotonic()))
                time.sleep(pause)
        except BaseException as e:  # pragma: no cover - reported below
            failures.append(e)

    never = threading.Event()
    ta = threading.Thread(target=run, args=(a, "A", a_ok, 0.2, stop_a), daemon=True)
    tb = threading.Thread(target=run, args=(b, "B", b_ok, 0.03, never), daemon=True)
    ta.start()
    time.sleep(0.1)
    tb.start()
    time.sleep(0.6)
    leader = cluster.wait_leader()
    cluster.kill(leader)
    time.sleep(1.5)
    cluster.restart(leader)
    cluster.wait_healthy(15)
    time.sleep(0.5)
    stop_a.set()
    ta.join(5)
    t_stop = time.monotonic()
    deadline = t_stop + ttl + 4
    while not b_ok and time.monotonic() < deadline:
        time.sleep(0.05)
    done.set()
    tb.join(5)
    a.close()
    b.close()
    assert not failures, failures
    assert a_ok, "A never held the lease"
    assert b_ok, "B never got the lease after A stopped renewing"
    # No overlap: a success of one after a success of the other needs the other's ttl to be over.
    for a0, a1 in a_ok:
        for b0, b1 in b_ok:
            assert b1 >= a0 + ttl or a1 >= b0 + ttl, ((a0, a1), (b0, b1))
    first_b = b_ok[0]
    last_a = max(t0 for t0, _ in a_ok)
    assert first_b[1] >= last_a + ttl


def test_server_lease_timer_is_only_extended_by_a_leader_change(cluster: EtcdCluster) -> None:
    """etcd resets lease timers to their full TTL on a new leader: the backstop only grows."""
    st = store_for(cluster, unique_cluster_name(), timeout=2.0)
    assert st.acquire_lease("ha_manager_lock", "n1", 2)
    lease_id = st._backstops["ha_manager_lock"].lease_id
    granted = st._backstops["ha_manager_lock"].ttl

    def ttl_left() -> int:
        resp = st._gw.call(
            "/v3/lease/timetolive", {"ID": str(lease_id)}, deadline=st._deadline(), mutating=False
        )
        return int(resp.get("TTL", -1))

    time.sleep(2.2)
    before, t_before = ttl_left(), time.monotonic()
    assert 0 < before <= granted - 2
    cluster.kill(cluster.wait_leader())
    cluster.wait_leader(15)
    after, t_after = ttl_left(), time.monotonic()
    assert after >= before - (t_after - t_before)  # never shortened...
    assert after >= granted - 1  # ...in fact reset to the full TTL by the new leader
    st.close()
