"""The ``ct`` agent (agents/ct.py) on real crun containers.

The built-in busybox tree (agents/rootfs.py) and its init: a start through
``exec_resource_agent`` (crun in the service's cgroup below the node's, the
init's answer proving its own PID, UTS and network namespaces), a fresh
plugin (a new LRM) finding it, an idempotent start, the SIGTERM stop; an
init that ignores SIGTERM killed after ``stop_timeout``; a fence
(``cgroup.kill`` of the node's cgroup) leaving nothing behind and a later
start that works; malformed properties refused. About 2 s in all.

No skip: a host without crun or busybox-static fails (``make deps`` installs them).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents import procutil
from agents.ct import CtPlugin, ping_container
from agents.rootfs import default_ct_rootfs
from ha.agent import exec_resource_agent
from ha.constants import ExitCode
from tests.agents.helpers import AgentEnv, conf, kill_everything, wait_until

pytestmark = pytest.mark.timeout(60)

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture
def ct(tmp_path: Path, cgroup_base: Path, token: str) -> Iterator[CtPlugin]:
    plugin = CtPlugin(tmp_path / "state", cgroup_base=cgroup_base, start_timeout=10.0, kill_wait=3.0)
    try:
        yield plugin
    finally:
        for state_file in plugin.state_dir.glob("*/ct/*.json"):
            st = plugin.load_state(state_file.parent.parent.name, state_file.stem)
            if st is not None and st.cgroup:
                cg = Path(st.cgroup)
                procutil.cgroup_kill(cg)
                wait_until(lambda cg=cg: not procutil.cgroup_populated(cg), timeout=5)
        assert not kill_everything(plugin, token), "a container survived its test"


def ns(pid: int, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def test_lifecycle_of_the_built_in_container(ct: CtPlugin, cgroup_base: Path) -> None:
    sid = "ct:102"
    env = AgentEnv("n1", {"ct": ct})
    cd = conf(sid)
    assert exec_resource_agent(env.env, sid, cd, "started", {}) == ExitCode.SUCCESS, env.text()
    assert ct.check_running(env.env, sid, cd)

    st = ct.status(env.env, sid, cd)
    assert st.healthy and st.crun_status == "running" and st.answer is not None, st
    assert UUID.match(st.answer.id) and st.answer.pid == 1  # its own PID namespace
    assert st.answer.hostname == "ct102" and st.answer.netdevs == "lo"  # UTS and network namespaces
    assert ct.healthy(env.env, sid, cd)

    # every process (crun and the container's init) in the service's cgroup below the node's
    cg = cgroup_base / "n1" / "ct:102"
    pids = procutil.cgroup_procs(cg)
    state = ct.crun_state("n1", "102")
    assert state is not None and state["status"] == "running"
    init = int(str(state["pid"]))
    leader = ct.load_state("n1", "102")
    assert leader is not None and {leader.pid, init} <= set(pids), pids  # crun run and the init
    for kind in ("pid", "mnt", "uts", "net", "ipc"):
        assert ns(init, kind) != ns(os.getpid(), kind), kind
    assert Path(f"/proc/{init}/root/bin/busybox").is_file()
    with pytest.raises(OSError):  # the root is read-only
        Path(f"/proc/{init}/root/etc/x").write_text("x")

    # a new LRM finds it; a second start does nothing
    fresh = CtPlugin(ct.state_dir, cgroup_base=cgroup_base)
    assert fresh.check_running(env.env, sid, cd)
    assert exec_resource_agent(env.env, sid, cd, "started", {}) == ExitCode.SUCCESS
    again = ping_container(ct.io_dir("n1", "102"))
    assert again is not None and again.id == st.answer.id  # the same container

    assert exec_resource_agent(env.env, sid, cd, "stopped", {}) == ExitCode.SUCCESS, env.text()
    assert not ct.check_running(env.env, sid, cd) and procutil.cgroup_procs(cg) == []
    assert ct.crun_state("n1", "102") is None  # crun forgot it too
    assert ct.load_state("n1", "102") is None and not cg.exists()
    log = ct.log_path("n1", "102").read_text()
    assert "PYHA-CT: up id=" in log and "SIGTERM: stopping" in log  # a clean stop, not a kill
    assert "killing" not in env.text()
    # a restart is a new container
    assert exec_resource_agent(env.env, sid, cd, "started", {}) == ExitCode.SUCCESS, env.text()
    new = ping_container(ct.io_dir("n1", "102"))
    assert new is not None and new.id != st.answer.id
    ct.shutdown(env.env, sid, cd, 0)  # hard stop
    assert not ct.check_running(env.env, sid, cd)


def test_an_init_that_ignores_sigterm_is_killed_after_stop_timeout(ct: CtPlugin) -> None:
    sid = "ct:103"
    env = AgentEnv("n1", {"ct": ct})
    # PID 1 of a PID namespace ignores a signal it has no handler for: sleep never sees SIGTERM
    cd = conf(sid, init="exec sleep 600", stop_timeout="0.5", hostname="stubborn")
    assert exec_resource_agent(env.env, sid, cd, "started", {}) == ExitCode.SUCCESS, env.text()
    st = ct.status(env.env, sid, cd)
    assert st.healthy and st.answer is None  # health none: crun state alone
    assert exec_resource_agent(env.env, sid, cd, "stopped", {}) == ExitCode.SUCCESS, env.text()
    assert "still running 0.5s after SIGTERM, killing it" in env.text()
    assert not ct.check_running(env.env, sid, cd) and ct.crun_state("n1", "103") is None


def test_fencing_the_node_cgroup_kills_the_container(ct: CtPlugin, cgroup_base: Path) -> None:
    sid = "ct:104"
    env = AgentEnv("n1", {"ct": ct})
    cd = conf(sid)
    assert exec_resource_agent(env.env, sid, cd, "started", {}) == ExitCode.SUCCESS, env.text()
    state = ct.crun_state("n1", "104")
    assert state is not None
    init = int(str(state["pid"]))
    assert procutil.cgroup_kill(cgroup_base / "n1")  # what fencing the node does
    wait_until(lambda: not ct.check_running(env.env, sid, cd), timeout=5)
    assert not procutil.pid_alive(init)
    # crun still remembers the dead container; the next start (the node back) clears that
    assert exec_resource_agent(env.env, sid, cd, "started", {}) == ExitCode.SUCCESS, env.text()
    answer = ping_container(ct.io_dir("n1", "104"))
    assert answer is not None and answer.pid == 1
    assert exec_resource_agent(env.env, sid, cd, "stopped", {}) == ExitCode.SUCCESS, env.text()


def test_malformed_properties_refuse_the_start(ct: CtPlugin, tmp_path: Path) -> None:
    env = AgentEnv("n1", {"ct": ct})
    for props, message in (
        ({"hostname": "-bad"}, "is not a host name"),
        ({"rootfs": str(tmp_path / "nosuch")}, "no directory"),
        ({"rootfs": str(tmp_path)}, "has no /bin/sh"),
        ({"health": "ping"}, "is not one of guest, none"),
    ):
        # past the schema (which refuses the first and the last too): the agent's own checks
        cd = dataclasses.replace(conf("ct:105"), extra=props)
        assert exec_resource_agent(env.env, "ct:105", cd, "started", {}) == ExitCode.ERROR, props
        assert message in env.text(), (props, env.text())
        assert not ct.check_running(env.env, "ct:105", cd)


@pytest.mark.parametrize("init", ["echo bye; exit 3", "sleep 0.2; exit 3"])
def test_an_init_that_exits_fails_the_start(ct: CtPlugin, init: str) -> None:
    """Without a health check, an init that exits at once, or soon (START_SETTLE), fails the start."""
    env = AgentEnv("n1", {"ct": ct})
    cd = conf("ct:106", init=init)
    assert exec_resource_agent(env.env, "ct:106", cd, "started", {}) == ExitCode.ERROR
    # seen exiting while the start waits for it, or (a loaded host) seen "running" by crun for
    # the moment before the exit, then found dead by the start's own check right after
    said = ("container exited during start", "not up within", "unable to start service ct:106")
    assert any(s in env.text() for s in said), env.text()
    assert not ct.check_running(env.env, "ct:106", cd)


def test_own_rootfs_runs_its_init(ct: CtPlugin) -> None:
    env = AgentEnv("n1", {"ct": ct})
    tree = default_ct_rootfs()  # any tree with /bin/sh: here the built-in one, with another init
    cd = conf("ct:107", rootfs=str(tree), init="trap 'exit 0' TERM; while :; do sleep 0.1; done")
    assert exec_resource_agent(env.env, "ct:107", cd, "started", {}) == ExitCode.SUCCESS, env.text()
    assert ct.healthy(env.env, "ct:107", cd)
    assert exec_resource_agent(env.env, "ct:107", cd, "stopped", {}) == ExitCode.SUCCESS, env.text()
    assert "killing" not in env.text()


def test_migrate_is_a_relocation(ct: CtPlugin) -> None:
    """BEHAVIOUR.md §9.6: a running container cannot migrate live: stopped here, the target starts it."""
    env = AgentEnv("n1", {"ct": ct})
    cd = conf("ct:108")
    assert exec_resource_agent(env.env, "ct:108", cd, "started", {}) == ExitCode.SUCCESS, env.text()
    assert ct.migrate(env.env, "ct:108", cd, "n2", True)
    assert ("warning", "unable to live migrate running container, fallback to relocate") in env.lines
    assert ("info", "stopping service ct:108 (relocate to node 'n2')") in env.lines
    assert not ct.check_running(env.env, "ct:108", cd) and ct.crun_state("n1", "108") is None
