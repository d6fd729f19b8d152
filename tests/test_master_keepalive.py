"""A long master round renews the manager lease and updates its watchdog as it goes (issue #15).

At 20 nodes on etcd, a master that recovered the services of fenced nodes moved
their locations one after the other (two etcd requests each, slow under load) and
was reset by its own watchdog before the round ended; each master after it did the
same round and went the same way.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ha.errors import HaError, LockLost
from ha.records import ManagerStatus
from store import records as rec
from store.base import Record
from store.dirstore import DirStore
from tests.envstubs import context
from tests.fence.test_watchdog_actor import Recording

from actors.env import LiveEnv  # isort: skip


class SlowStore(DirStore):
    """Each record write takes WRITE_TIME (an etcd majority under load)."""

    WRITE_TIME = 0.15

    def write(self, name: str, data: bytes, expect_version: str | None = None) -> str:
        time.sleep(self.WRITE_TIME)
        return super().write(name, data, expect_version)


def master(tmp_path: Path, daemon: str = "crm") -> tuple[LiveEnv, Recording, SlowStore]:
    store = SlowStore(tmp_path)
    ctx = context(store)
    ctx.watchdog = wd = Recording()
    env = LiveEnv(ctx, daemon)
    assert env.get_ha_manager_lock() if daemon == "crm" else env.get_ha_agent_lock()
    env.watchdog_open()
    for i in range(8):
        rec.write_location(store, f"proc:s{i}", "n2")
    wd.calls.clear()
    return env, wd, store


def test_a_long_recovery_round_keeps_lease_and_watchdog(tmp_path: Path) -> None:
    env, wd, store = master(tmp_path)
    before = store.lease_info(rec.MANAGER_LEASE)
    t0 = time.monotonic()
    for i in range(8):  # 8 moves of 0.15 s: 1.2 s, more than lease_ttl / 10 (0.5 s) twice over
        env.steal_service(f"proc:s{i}", "n2", "n3")
    took = time.monotonic() - t0
    updates = [c for c in wd.calls if c[0] == "update"]
    assert len(updates) >= int(took / 0.5) - 1 >= 1, (took, wd.calls)
    after = store.lease_info(rec.MANAGER_LEASE)
    assert before is not None and after is not None and after.holder == before.holder
    assert rec.read_location(store, "proc:s7")[0] == "n3"


def test_a_lost_manager_lease_updates_no_watchdog(tmp_path: Path) -> None:
    env, wd, store = master(tmp_path)
    store.release_lease(rec.MANAGER_LEASE, env.holder)
    assert store.acquire_lease(rec.MANAGER_LEASE, "n2#other", 5.0)
    time.sleep(0.55)
    for i in range(4):
        env.steal_service(f"proc:s{i}", "n2", "n3")
    assert [c for c in wd.calls if c[0] == "update"] == []  # its watchdog fires; the lease is not its own
    with pytest.raises(LockLost):  # nor is manager_status
        env.write_manager_status(ManagerStatus(master_node="n1"))


def test_an_lrm_moving_a_location_renews_nothing(tmp_path: Path) -> None:
    env, wd, _store = master(tmp_path, "lrm")
    for i in range(5):
        env.steal_service(f"proc:s{i}", "n2", "n3")
    assert wd.calls == []


class CountingStore(DirStore):
    """Counts reads of location records (each is a request on etcd)."""

    reads = 0

    def read(self, name: str) -> Record | None:
        if name.startswith(rec.LOCATIONS):
            self.reads += 1
        return super().read(name)


def test_a_recovery_move_reads_the_location_once(tmp_path: Path) -> None:
    """The manager's look at the location, then the move: one read, not three (issue #15, etcd)."""
    store = CountingStore(tmp_path)
    env = LiveEnv(context(store), "crm")
    for i in range(5):
        rec.write_location(store, f"proc:s{i}", "n2")
    store.reads = 0
    for i in range(5):
        assert env.service_location(f"proc:s{i}") == "n2"
        env.steal_service(f"proc:s{i}", "n2", "n3")
    assert store.reads == 5  # the old code: 15
    assert all(rec.read_location(store, f"proc:s{i}")[0] == "n3" for i in range(5))
    tokens = [rec.read_fencing_token(store, f"proc:s{i}") for i in range(5)]
    assert all(t > 1 for t in tokens)  # each move still gave a larger token


def test_a_stale_reused_location_fails_the_move_and_moves_nothing(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    env = LiveEnv(context(store), "crm")
    rec.write_location(store, "proc:a", "n2")
    assert env.service_location("proc:a") == "n2"
    other = DirStore(tmp_path)
    rec.write_location(other, "proc:a", "n1", rec.read_location(other, "proc:a")[1])  # someone moved it
    with pytest.raises(HaError):
        env.steal_service("proc:a", "n2", "n3")
    assert rec.read_location(store, "proc:a")[0] == "n1"
