"""Lease details that fencing relies on: per-process holders, suspend-aware clocks, the unwatched mark."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from actors.env import LiveEnv
from fence.clock import boottime
from store import records as rec
from store.dirstore import DirStore
from tests import envstubs


def env(store: DirStore, node: str, holder: str, daemon: str = "lrm") -> LiveEnv:
    return envstubs.live_env(store, node, holder, daemon)


def test_two_processes_of_one_node_cannot_both_hold_its_lease(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    first, second = env(store, "n2", "n2#aaaa"), env(store, "n2", "n2#bbbb")
    assert first.get_ha_agent_lock()
    assert not second.get_ha_agent_lock(), "a second ha-node for n2 must not share n2's lease"
    assert first.get_ha_agent_lock()  # the first still renews
    info = store.lease_info(rec.agent_lease("n2"))
    assert info is not None and info.holder == "n2#aaaa"


def test_a_fenced_node_renews_nothing(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    e = env(store, "n1", "n1#x")
    assert e.get_ha_agent_lock()
    e.ctx.fenced.set()
    assert not e.get_ha_agent_lock() and not e.get_ha_manager_lock()


def test_leases_and_deadlines_count_on_the_boot_clock(tmp_path: Path) -> None:
    """CLOCK_BOOTTIME keeps counting while the host sleeps: a resumed holder's lease has run out.

    (No host here can be suspended in a test; what is checked is that every clock fencing
    relies on is the boot clock.)
    """
    from actors import watchdog  # noqa: PLC0415
    from store.etcdstore import EtcdStore  # noqa: PLC0415

    assert DirStore(tmp_path)._clock is boottime
    assert EtcdStore("127.0.0.1:1", insecure=True)._clock is boottime
    assert watchdog.boottime is boottime


def test_fencing_a_node_that_left_unwatched_services_fails(tmp_path: Path) -> None:
    """The mark is read after the lease is taken, so a release that let the master in is always seen."""
    store = DirStore(tmp_path)
    master = env(store, "n1", "n1#m", daemon="crm")
    store.write(rec.unwatched_name("n2"), b"released at T with proc:a running\n")
    assert not master.get_ha_agent_lock("n2")
    assert store.lease_info(rec.agent_lease("n2")) is None, "the failed fence gives the lease back"
    store.delete(rec.unwatched_name("n2"))
    assert master.get_ha_agent_lock("n2")


def test_boottime_is_monotonic_and_shared() -> None:
    a = boottime()
    t = threading.Thread(target=time.sleep, args=(0.01,))
    t.start()
    t.join()
    assert boottime() >= a + 0.01


def test_fencing_tokens_grow_with_every_move(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    e = env(store, "n1", "n1#x", daemon="crm")
    assert e.fencing_token("proc:a") == 0  # never moved: placed by resources.cfg
    seen = []
    node = "n1"
    store.write("resources.cfg", b"proc: a\n\tnode n1\n\tcmd sleep 1\n")
    for target in ("n2", "n3", "n1", "n1"):
        e.steal_service("proc:a", node, target)
        node = target
        seen.append(e.fencing_token("proc:a"))
    assert seen == sorted(seen) and len(set(seen)) == len(seen), seen
    assert rec.read_locations(store) == {"proc:a": "n1"}
    store.delete(rec.location_name("proc:a"))  # removed and added again
    e.steal_service("proc:a", "n1", "n2")
    assert e.fencing_token("proc:a") >= seen[0]  # the wall clock keeps it above the first incarnation's
