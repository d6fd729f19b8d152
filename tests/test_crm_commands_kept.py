"""No administrator command is lost, and a master never writes over a manager_status it did not read (#10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.env import LiveEnv
from ha.constants import Timing
from ha.crm import CRM
from ha.errors import LockLost
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


def test_a_slave_that_read_early_writes_as_the_new_master(tmp_path: Path) -> None:
    """A new term rebases the compare-and-swap on the record as the new master reads it."""
    store = DirStore(tmp_path)
    slave = envstubs.live_env(store, "n2", "n2#s")
    slave.read_manager_status()  # as a slave: nothing written yet
    old = envstubs.live_env(store, "n1", "n1#m")
    assert old.get_ha_manager_lock()
    old.read_manager_status()
    old.write_manager_status(ManagerStatus(master_node="n1"))
    slave.read_manager_status()  # health checks go on meanwhile
    assert store.release_lease(rec.MANAGER_LEASE, "n1#m")
    assert slave.get_ha_manager_lock()
    ms = slave.read_manager_status()
    assert ms.master_node == "n1"
    ms.master_node = "n2"
    slave.write_manager_status(ms)  # raised LockLost (a conflict with the old master's write) before
    assert rec.read_manager_status(store)[0].master_node == "n2"


def test_a_recovery_redone_after_a_lost_status_write_finds_its_move_done(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    rec.write_location(store, "proc:a", "n2")
    master = envstubs.live_env(store)
    master.steal_service("proc:a", "n2", "n1")
    master.steal_service("proc:a", "n2", "n1")  # the same round again: already done, no error
    assert rec.read_location(store, "proc:a")[0] == "n1"
