"""Warm standby QEMUs for live migrations (agents/vmstandby.py, agents/vmincoming.py; issue #12).

Node ``n2`` keeps a standby ``-incoming defer -S`` QEMU of ``vm:200`` (placed on
``n1``), so that a migration to ``n2`` only opens its migration port. The
safety cases: a standby is never counted as the service, never resumed, a
start on its node kills it and boots afresh, the incoming reaper leaves it
alone, fencing the node kills it, and the keeper kills it when the service
is removed, stopped, placed on its node or beyond the limit, and replaces it
when the config changes (a ``listen`` never takes a standby whose command
line no longer matches). Firmware-only guests, as in test_vm_migrate.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agents import procutil
from agents.vmincoming import INCOMING, STANDBY
from agents.vmqmp import MigrationError, Phases
from agents.vmstandby import StandbyKeeper, standby_limit, wanted
from ha.agent import exec_resource_agent
from ha.config.resources import ResourceConfig
from ha.constants import ExitCode
from tests.agents.helpers import conf, wait_until
from tests.agents.vmnodes import NAME, SID, Nodes, start_on_n1

pytestmark = pytest.mark.timeout(120)


def standby_on_n2(ns: Nodes) -> list[int]:
    p2, env2 = ns.plugins["n2"], ns.envs["n2"]
    assert p2.standby_ensure(env2.env, SID, ns.conf("n1")), env2.text()
    assert p2.marker("n2", NAME) is not None and p2.marker("n2", NAME)[0] == STANDBY  # type: ignore[index]
    pids = ns.pids("n2")
    assert pids
    return pids


class Keeper:
    """A keeper of node n2 whose config is a dict the test edits (``where``: the service's node)."""

    def __init__(self, ns: Nodes, limit: int = 4) -> None:
        self.ns = ns
        self.where: str | None = "n1"  # None: the service is removed
        self.others: dict[str, ResourceConfig] = {}
        self.keeper = StandbyKeeper(ns.plugins["n2"], ns.envs["n2"].env, self.services, limit)

    def services(self) -> dict[str, ResourceConfig]:
        out = dict(self.others)
        if self.where is not None:
            out[SID] = self.ns.conf(self.where)
        return out


def test_a_migration_takes_over_the_standby(nodes: Nodes) -> None:
    src_pids = start_on_n1(nodes)
    standby = standby_on_n2(nodes)
    p2, env2 = nodes.plugins["n2"], nodes.envs["n2"]
    cd2 = nodes.conf("n2")
    # a standby is not the service, runs nothing (paused, waiting for a stream it has no port for)
    assert not p2.check_running(env2.env, SID, cd2)
    wait_until(lambda: nodes.status("n2") == "inmigrate", timeout=10)
    # SAFETY: never resumed (it holds nothing of the guest)
    with pytest.raises(MigrationError, match="is a standby: not resuming it"):
        p2.incoming_resume(env2.env, SID, cd2)
    assert nodes.status("n2") == "inmigrate"
    # ensuring it again keeps it (same key)
    assert p2.standby_ensure(env2.env, SID, nodes.conf("n1")) and nodes.pids("n2") == standby

    phases = Phases()
    uri = p2.incoming_listen(env2.env, SID, cd2, "127.0.0.1", phases)
    assert uri.startswith("tcp:127.0.0.1:")
    assert "standby" in phases.ms and "launch" not in phases.ms, phases.ms
    assert p2.marker("n2", NAME) is not None and p2.marker("n2", NAME)[0] == INCOMING  # type: ignore[index]
    assert nodes.pids("n2") == standby  # the standby's QEMU, now the migration's
    assert p2.incoming_abort(env2.env, SID, cd2)  # (this listen was only to look)
    assert not nodes.pids("n2")

    # a whole migration through the standby: the target's QEMU is the one launched ahead of time
    standby = standby_on_n2(nodes)
    env1 = nodes.envs["n1"]
    assert nodes.plugins["n1"].migrate_live(env1.env, SID, nodes.conf("n1"), "n2"), env1.text()
    assert nodes.requests[-2:] == [("n2", "listen"), ("n2", "resume")]
    assert nodes.status("n2") == "running" and nodes.pids("n2") == standby
    assert p2.marker("n2", NAME) is None and p2.check_running(env2.env, SID, cd2)
    wait_until(lambda: not any(procutil.pid_alive(p) for p in src_pids), timeout=10)
    assert any("standby QEMU waiting for a live migration" in m for _, m in env2.lines), env2.text()
    # the running guest is never taken for a standby, nor replaced by one
    assert not p2.standby_ensure(env2.env, SID, nodes.conf("n1"))
    assert nodes.pids("n2") == standby and nodes.status("n2") == "running"
    assert not p2.standby_drop(env2.env, SID, NAME, "test")
    assert nodes.status("n2") == "running"


def test_a_start_kills_the_standby_and_boots_afresh(nodes: Nodes) -> None:
    standby = standby_on_n2(nodes)
    env2 = nodes.envs["n2"]
    rc = exec_resource_agent(env2.env, SID, nodes.conf("n2"), "started", {})
    assert rc == ExitCode.SUCCESS, env2.text()
    assert not any(procutil.pid_alive(p) for p in standby)
    assert nodes.status("n2") == "running" and not set(nodes.pids("n2")) & set(standby)
    assert nodes.plugins["n2"].marker("n2", NAME) is None
    assert ("info", f"service {SID}: killing its standby QEMU (never resumed)") in env2.lines


def test_the_reaper_spares_standbys_and_the_fence_kills_them(nodes: Nodes, cgroup_base: Path) -> None:
    p2, env2 = nodes.plugins["n2"], nodes.envs["n2"]
    p2.incoming_deadline = 0.3
    # a migration's incoming QEMU, reaped after its deadline; a standby launched since stays
    p2.incoming_listen(env2.env, SID, nodes.conf("n2"), "127.0.0.1")
    assert p2.incoming_abort(env2.env, SID, nodes.conf("n2"))
    standby = standby_on_n2(nodes)
    time.sleep(1.0)  # the first listen's reaper fired meanwhile
    assert nodes.pids("n2") == standby and p2.standby_names("n2") == [NAME]
    # a migration's QEMU whose listen is older than the deadline (its reaper lost with its process)
    p2._write_marker("n2", NAME, INCOMING, f"{time.time() - 5}")
    assert p2.drop_stale_incoming(env2.env, SID, NAME)
    assert not nodes.pids("n2") and p2.marker("n2", NAME) is None

    standby = standby_on_n2(nodes)
    procutil.cgroup_kill(cgroup_base / "n2")  # what the node's fence does (fence/kill.py NodeKiller)
    wait_until(lambda: not any(procutil.pid_alive(p) for p in standby), timeout=10)
    # the keeper's next look replaces it (under load a look may come before the dead QEMU is
    # gone from its records: the keeper looks again, as it does every STANDBY_INTERVAL)
    k = Keeper(nodes)

    def replaced() -> list[int]:
        k.keeper.reconcile()
        return nodes.pids("n2")

    wait_until(replaced, timeout=15, interval=0.5)
    assert nodes.pids("n2") and not set(nodes.pids("n2")) & set(standby)
    assert ("info", f"service {SID}: killing its standby QEMU (it died)") in env2.lines


def test_the_keeper_follows_config_and_placement(nodes: Nodes) -> None:
    p2, env2 = nodes.plugins["n2"], nodes.envs["n2"]
    k = Keeper(nodes)
    k.keeper.reconcile()
    first = nodes.pids("n2")
    assert first and p2.standby_names("n2") == [NAME]
    k.keeper.reconcile()
    assert nodes.pids("n2") == first  # nothing changed: the same standby

    # a config change: a listen before the keeper caught up never takes the old standby ...
    nodes.props["memory"] = "48"
    phases = Phases()
    p2.incoming_listen(env2.env, SID, nodes.conf("n2"), "127.0.0.1", phases)
    assert "launch" in phases.ms and "standby" not in phases.ms, phases.ms
    assert not set(nodes.pids("n2")) & set(first)
    assert p2.incoming_abort(env2.env, SID, nodes.conf("n2"))
    # ... and the keeper replaces a standby of the old config
    nodes.props["memory"] = "32"
    k.keeper.reconcile()
    old = nodes.pids("n2")
    nodes.props["memory"] = "48"
    k.keeper.reconcile()
    new = nodes.pids("n2")
    assert new and not set(new) & set(old)
    assert ("info", f"service {SID}: killing its standby QEMU (its config changed)") in env2.lines
    st = p2.load_state("n2", NAME)
    assert st is not None and "-m 48" in st.cmd and st.cmd.endswith("-incoming defer -S")

    # stopped, placed on n2, removed: no standby
    for change, why in (
        (lambda: nodes.props.update(state="stopped"), "its service is stopped"),
        (lambda: setattr(k, "where", "n2"), "its service runs here"),
        (lambda: setattr(k, "where", None), "its service was removed"),
    ):
        nodes.props.pop("state", None)
        k.where = "n1"
        k.keeper.reconcile()
        standby = nodes.pids("n2")
        assert standby
        change()
        k.keeper.reconcile()
        assert not any(procutil.pid_alive(p) for p in standby), why
        assert p2.marker("n2", NAME) is None and p2.load_state("n2", NAME) is None
        assert ("info", f"service {SID}: killing its standby QEMU ({why})") in env2.lines


def test_the_keeper_thread_its_limit_and_its_close(nodes: Nodes) -> None:
    p2 = nodes.plugins["n2"]
    k = Keeper(nodes, limit=1)
    k.others["vm:100"] = conf("vm:100", node="n1", disk=nodes.disk, memory="32")  # sorted first
    k.keeper.start()
    try:
        wait_until(lambda: p2.standby_names("n2") == ["100"], timeout=20)
        assert p2.marker("n2", NAME) is None  # beyond the limit
        del k.others["vm:100"]
        k.keeper.poke()
        wait_until(lambda: p2.standby_names("n2") == [NAME], timeout=20)
        assert p2.load_state("n2", "100") is None
    finally:
        k.keeper.close(kill=True)
    assert p2.standby_names("n2") == [] and not nodes.pids("n2")


def test_standby_settings() -> None:
    assert standby_limit({}) == 4
    assert standby_limit({"PYHA_VM_STANDBY": "0"}) == 0
    assert standby_limit({"PYHA_VM_STANDBY": "off"}) == 0
    assert standby_limit({"PYHA_VM_STANDBY": "2"}) == 2
    services = {
        "vm:101": conf("vm:101", node="n1"),
        "vm:102": conf("vm:102", node="n2"),  # runs here
        "vm:103": conf("vm:103", node="n1", state="stopped"),
        "ct:104": conf("ct:104", node="n1"),
        "vm:105": conf("vm:105", node="n3"),
        "vm:106": conf("vm:106", node="n3"),
    }
    assert [sid for sid, _ in wanted("n2", services, 2)] == ["vm:101", "vm:105"]
