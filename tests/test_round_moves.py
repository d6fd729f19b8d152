"""A master's recovery round on etcd: its location reads and moves in a few requests (issue #15).

At 20 nodes, recovering a fenced node's 100 services read and moved each location
with requests one after the other (about 100 ms each on a loaded host): a 21.7 s
round before the first service could start elsewhere. actors/moves.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ha.errors import LockLost
from ha.records import ManagerStatus, ServiceData
from store import records as rec
from store.etcd_harness import EtcdCluster
from store.etcdstore import EtcdStore
from tests.envstubs import live_env
from tests.store.etcd_fixtures import Counting, cluster_fixture, unique_cluster_name

from actors.env import LiveEnv  # isort: skip

SIDS = [f"proc:s{i}" for i in range(100)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[EtcdCluster]:
    yield from cluster_fixture(1)


@pytest.fixture
def st(cluster: EtcdCluster) -> Iterator[EtcdStore]:
    s = EtcdStore.from_url(cluster.url(unique_cluster_name()))
    # every service on n2; the odd ones never moved (no location record: the config's node)
    text = "\n".join(f"proc: {sid[5:]}\n\tcmd sleep 9\n\tnode n2\n" for sid in SIDS)
    s.write(rec.RESOURCES_CFG, text.encode())
    for sid in SIDS[::2]:
        rec.write_location(s, sid, "n2")
    yield s
    s.close()


def master(st: EtcdStore) -> LiveEnv:
    env = live_env(st)
    assert env.get_ha_manager_lock()
    env.read_manager_status()
    assert env.read_service_config().get(SIDS[1]) is not None  # the round's first read
    return env


def recover(env: LiveEnv, sids: list[str]) -> ManagerStatus:
    """What Manager.next_state_recovery asks of the env for each service (after the hint)."""
    env.prefetch_locations(sids)
    ms = ManagerStatus(master_node="n1")
    for sid in sids:
        assert env.service_location(sid) == "n2"
        env.steal_service(sid, "n2", "n3")
        ms.service_status[sid] = ServiceData(state="started", node="n3", uid="u" + sid)
    return ms


def test_a_recovery_round_reads_and_moves_in_a_few_requests(st: EtcdStore) -> None:
    env = master(st)
    tokens = {sid: rec.read_fencing_token(st, sid) for sid in SIDS}
    counted = Counting(st)
    ms = recover(env, SIDS)
    # nothing moved before the round's manager_status write: the LRMs act on that write
    assert {rec.read_location(st, sid)[0] for sid in SIDS} == {"n2", None}  # None: never moved
    counted.paths.clear()
    env.write_manager_status(ms)
    paths = list(counted.paths)
    # 100 moves: two transactions of 64 and 36, then the lease check and the status write
    assert paths.count("/v3/kv/txn") <= 4, paths
    assert len(paths) <= 8, paths
    assert {rec.read_location(st, sid)[0] for sid in SIDS} == {"n3"}
    assert all(rec.read_fencing_token(st, sid) > tokens[sid] for sid in SIDS)


def test_the_round_reads_the_locations_once(st: EtcdStore) -> None:
    env = master(st)
    counted = Counting(st)
    recover(env, SIDS)
    assert counted.paths.count("/v3/kv/range") == 0, counted.paths  # no read one by one
    assert counted.paths.count("/v3/kv/txn") == 1, counted.paths  # 100 reads: one transaction


def test_a_location_moved_meanwhile_is_not_moved_over_and_the_master_steps_down(st: EtcdStore) -> None:
    env = master(st)
    ms = recover(env, SIDS[:10])
    rec.write_location(st, SIDS[4], "n1")  # an earlier master's move, or an operator's
    with pytest.raises(LockLost, match="proc:s4"):
        env.write_manager_status(ms)
    assert rec.read_location(st, SIDS[4])[0] == "n1"  # kept
    # the others are each moved on their own; manager_status is not written: the next term
    # starts from the records
    assert [rec.read_location(st, sid)[0] for sid in SIDS[:10]] == ["n3"] * 4 + ["n1"] + ["n3"] * 5
    assert st.read(rec.MANAGER_STATUS) is None


def test_a_master_that_lost_its_lease_writes_no_queued_move(st: EtcdStore) -> None:
    env = master(st)
    recover(env, SIDS[:5])
    env.release_ha_manager_lock()
    with pytest.raises(LockLost):
        env.read_service_config()  # its next look at the locations
    assert {rec.read_location(st, sid)[0] for sid in SIDS[:5]} == {"n2", None}


def test_a_look_at_a_service_moved_this_round_sees_the_move(st: EtcdStore) -> None:
    env = master(st)
    recover(env, SIDS[:3])
    assert env.service_location(SIDS[1]) == "n3"  # the queued moves land first
    assert rec.read_location(st, SIDS[0])[0] == "n3"


def test_every_reader_follows_the_moves_in_one_request(st: EtcdStore) -> None:
    """Each daemon of every node follows the locations (LocationsCache): after a round that
    moved 100, each read them one request after the other (19 nodes at once)."""
    cache = rec.LocationsCache()
    assert cache.read(st) == {sid: "n2" for sid in SIDS[::2]}  # the first look: everything
    env = master(st)
    env.write_manager_status(recover(env, SIDS))
    counted = Counting(st)
    assert cache.read(st) == {sid: "n3" for sid in SIDS}
    assert counted.paths == ["/v3/kv/range", "/v3/kv/txn"], counted.paths  # the change log, the records


def test_moves_of_a_master_deposed_before_its_write_are_dropped(st: EtcdStore) -> None:
    env = master(st)
    ms = recover(env, SIDS[:5])
    st.release_lease(rec.MANAGER_LEASE, env.holder)
    assert st.acquire_lease(rec.MANAGER_LEASE, "n2#other", 5.0)
    with pytest.raises(LockLost):
        env.write_manager_status(ms)
    st.release_lease(rec.MANAGER_LEASE, "n2#other")
    env.read_service_config()  # the next Manager's first look (the lease may be its own again)
    assert {rec.read_location(st, sid)[0] for sid in SIDS[:5]} == {"n2", None}
