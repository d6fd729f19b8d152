"""`ha-manager status` takes who is alive from leases and the bus, not from record age (issue #17).

The records are written on a change only; these tests age them by hand and
check each status line against the proof of life the cluster really has.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from admin.ops import ApiOps
from ha.records import LrmStatus, ManagerStatus, ServiceData
from store import records as rec
from store.dirstore import DirStore

NODES = ["n1", "n2", "n3", "n4"]
OLD = 3600.0  # an hour: far past the reference's 30 s


def lines(ops: ApiOps) -> dict[str, str]:
    return {ln["id"]: ln["text"] for ln in ops.call("status", {})["lines"]}


def setup(tmp_path: Path) -> tuple[DirStore, float]:
    store = DirStore(tmp_path)
    then = time.time() - OLD
    ms = ManagerStatus(
        master_node="n1",
        timestamp=then,
        node_status={n: "online" for n in NODES},
        service_status={
            "vm:100": ServiceData("started", "n2", "u1"),
            "vm:101": ServiceData("started", "n3", "u2"),
        },
    )
    store.write(rec.MANAGER_STATUS, json.dumps(ms.to_dict()).encode())
    rec.write_lrm_status(store, "n1", LrmStatus("wait_for_agent_lock", "active", then, {}))
    rec.write_lrm_status(store, "n2", LrmStatus("active", "active", then, {}))
    rec.write_lrm_status(store, "n3", LrmStatus("active", "active", then, {}))
    rec.write_lrm_status(store, "n4", LrmStatus("wait_for_agent_lock", "active", then, {}))
    return store, then


def test_leases_and_the_bus_are_the_proof_of_life(tmp_path: Path) -> None:
    store, _ = setup(tmp_path)
    assert store.acquire_lease(rec.MANAGER_LEASE, "n1#a", 10.0)
    assert store.acquire_lease(rec.agent_lease("n2"), "n2#b", 10.0)  # n3's LRM renews nothing
    seen = {"n4": time.time() - 1.0}  # n4 heartbeats over the bus
    ops = ApiOps("n1", NODES, store, lambda: True, lease_ttl=10.0, last_seen=seen)
    got = lines(ops)
    assert got["master"].startswith("master n1 (active, ")
    assert got["lrm:n1"].startswith("lrm n1 (idle, ")  # the answering node itself
    assert got["lrm:n2"].startswith("lrm n2 (active, watchdog active, ")
    assert got["lrm:n3"].startswith("lrm n3 (old timestamp - dead?, ")  # an active LRM without its lease
    assert got["lrm:n4"].startswith("lrm n4 (idle, ")
    # the time shown is the proof's, not the record's
    assert time.ctime(time.time() - OLD)[:13] not in got["lrm:n2"]


def test_without_proof_the_records_age_as_in_the_reference(tmp_path: Path) -> None:
    store, _ = setup(tmp_path)
    assert store.acquire_lease(rec.MANAGER_LEASE, "n2#a", 10.0)  # held, but not by the named master
    assert store.acquire_lease(rec.agent_lease("n2"), "n3#b", 10.0)  # not n2's own
    ops = ApiOps("n1", NODES, store, lambda: False, lease_ttl=10.0, last_seen={})  # offline, no bus
    got = lines(ops)
    assert "old timestamp - dead?" in got["master"]
    for n in NODES:
        assert f"lrm {n} (old timestamp - dead?, " in got[f"lrm:{n}"], got
    # the verbose dump shows the records as written
    full = ops.call("status", {"verbose": True})["full"]
    assert full["manager_status"]["timestamp"] < time.time() - OLD + 5


def test_a_store_that_cannot_age_leases_gives_no_lease_proof(tmp_path: Path) -> None:
    """Offline status on etcd: a fresh client sees every lease as just renewed (lease_ttl None)."""
    store, _ = setup(tmp_path)
    assert store.acquire_lease(rec.MANAGER_LEASE, "n1#a", 10.0)
    assert store.acquire_lease(rec.agent_lease("n2"), "n2#b", 10.0)
    got = lines(ApiOps("n1", NODES, store, lambda: False, lease_ttl=None, last_seen={}))
    assert "old timestamp - dead?" in got["master"]
    assert "lrm n2 (old timestamp - dead?, " in got["lrm:n2"]
