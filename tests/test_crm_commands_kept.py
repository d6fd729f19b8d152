"""No administrator command is lost, and a master never writes over a manager_status it did not read (#10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.env import LiveEnv
from ha.constants import Timing
from ha.crm import CRM
from ha.errors import HaError, LockLost
from ha.records import ManagerStatus
from ha.states import CrmState
from store import records as rec
from store.dirstore import DirStore
from tests import envstubs


def master_env(store: DirStore, holder: str = "n1#a") -> LiveEnv:
    env = envstubs.live_env(store, holder=holder)
    assert env.get_ha_manager_lock()
    return env


def test_commands_read_by_a_master_that_died_before_writing_are_read_again(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    rec.queue_crm_command(store, "migrate proc:a n2")
    first = master_env(store)
    assert first.read_crm_commands() == "migrate proc:a n2\n"
    # the master dies here, before its manager_status write: the next one must see the command
    store.release_lease(rec.MANAGER_LEASE, "n1#a")
    second = master_env(store, "n1#b")
    assert second.read_crm_commands() == "migrate proc:a n2\n"


def test_commands_leave_the_queue_with_the_manager_status_write_and_later_ones_stay(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    rec.queue_crm_command(store, "migrate proc:a n2")
    env = master_env(store)
    ms = env.read_manager_status()
    assert env.read_crm_commands() == "migrate proc:a n2\n"
    rec.queue_crm_command(store, "stop proc:b 0")  # appended while the round runs
    env.write_manager_status(ms)
    assert env.read_crm_commands() == "stop proc:b 0\n"


def test_after_a_version_conflict_nothing_is_written_before_a_re_read(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    env = master_env(store)
    mine = env.read_manager_status()
    env.write_manager_status(mine)
    theirs = ManagerStatus(master_node="n3")
    rec.write_manager_status(store, theirs)  # another writer, behind this master's back
    with pytest.raises(LockLost):
        env.write_manager_status(mine)
    with pytest.raises(LockLost):
        env.write_manager_status(mine)  # the old code adopted their version and wrote over it here
    assert rec.read_manager_status(store)[0].master_node == "n3"
    env.read_manager_status()
    env.write_manager_status(mine)  # after a re-read writes go through again


def test_the_crm_leaves_the_master_state_when_its_status_write_is_refused(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    rec.write_manager_status(store, ManagerStatus())
    store.write(rec.RESOURCES_CFG, b"proc: a\n\tcmd sleep 9\n\tnode n1\n")
    crm = CRM(envstubs.live_env(store, holder="n1#c"), Timing(crm_loop=0.0))
    for _ in range(5):
        crm.do_one_iteration()
        if crm.state == CrmState.MASTER and crm.manager is not None and crm.manager.ms.master_node:
            break
    assert crm.state == CrmState.MASTER
    old_manager = crm.manager
    rec.write_manager_status(store, ManagerStatus(master_node="n3"))  # someone else wrote it
    crm.do_one_iteration()
    assert crm.state != CrmState.MASTER or crm.manager is not old_manager
    for _ in range(5):
        crm.do_one_iteration()
        if crm.state == CrmState.MASTER:
            break
    assert crm.state == CrmState.MASTER and crm.manager is not old_manager, "a new Manager, from the record"


def test_a_new_master_writes_over_what_it_read_after_taking_the_lease(tmp_path: Path) -> None:
    # issue #17 (found by bench failover): a slave's first read used to stay the CAS base, so
    # a take-over's first write always conflicted; with a recovery in that round the services
    # were moved (locations) but manager_status was not, and the retry failed for good
    store = DirStore(tmp_path)
    rec.write_manager_status(store, ManagerStatus(master_node="n2"))
    env = envstubs.live_env(store, holder="n1#d")
    env.read_manager_status()  # as a slave (health check)
    rec.write_manager_status(store, ManagerStatus(master_node="n2", node_status={"n3": "online"}))
    assert env.get_ha_manager_lock()
    ms = env.read_manager_status()  # the new Manager's read
    assert ms.node_status == {"n3": "online"}
    ms.master_node = "n1"
    env.write_manager_status(ms)  # no conflict
    assert rec.read_manager_status(store)[0].master_node == "n1"
    # while it holds the lease, its base stays its own last write (a foreign write conflicts)
    rec.write_manager_status(store, ManagerStatus(master_node="n3"))
    assert env.get_ha_manager_lock()
    env.read_manager_status()
    with pytest.raises(LockLost):
        env.write_manager_status(ms)


def test_a_recovery_retried_after_a_lost_status_write_finds_the_service_moved(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    store.write(rec.RESOURCES_CFG, b"proc: a\n\tcmd sleep 9\n\tnode n2\n")
    env = master_env(store)
    env.steal_service("proc:a", "n2", "n1")
    assert rec.read_location(store, "proc:a")[0] == "n1"
    env.steal_service("proc:a", "n2", "n1")  # the same move again: done already
    with pytest.raises(HaError):
        env.steal_service("proc:a", "n2", "n3")  # another move from where it no longer is
    assert rec.read_location(store, "proc:a")[0] == "n1"
