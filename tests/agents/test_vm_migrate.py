"""Live migration of a ``vm:`` service between two nodes of one host (agents/vm.py, agents/vmqmp.py).

Two plugins, ``n1`` and ``n2``, on one state folder and one test cgroup, as two
nodes of a local cluster are. The "peer" (how the source reaches the target;
in a live cluster a member-only API request, docs/API.md ``vm_incoming``) calls
the target plugin directly. The guests are firmware-only VMs (an empty raw
disk: the firmware idles, no kernel boots), so each QEMU costs well under a
second; the default guest's migration (boot id and uptime kept) is
tests/live/test_vm_live.py's.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import QMPClient

from agents import procutil, vmqmp
from agents.vm import VmPlugin
from agents.vmqmp import MigrationError, qmp_calls
from ha.agent import exec_resource_agent
from ha.constants import ExitCode
from tests.agents.helpers import free_port, wait_until
from tests.agents.vmnodes import NAME, SID, Nodes, start_on_n1

pytestmark = pytest.mark.timeout(120)


def _fd_table(pid: int) -> int:
    """The size of the process's file table (``FDSize`` in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("FDSize:"):
            return int(line.split()[1])
    raise AssertionError(f"no FDSize for {pid}")


def test_live_migration_hands_the_running_guest_over(nodes: Nodes, monkeypatch: pytest.MonkeyPatch) -> None:
    src_pids = start_on_n1(nodes)
    seen: dict[str, str | None] = {}

    def commit() -> None:  # where the live runtime moves the location: neither copy may run now
        seen["n2"] = nodes.status("n2")
        seen["marker"] = str(nodes.plugins["n2"].incoming_path("n2", NAME).exists())

    # the source's QMP has one client at a time, the migration's own session (open until its quit):
    # its status at the hand-over is the one that session read (and checked) before the commit
    migrate = vmqmp.migrate

    def spy(*args: Any, **kwargs: Any) -> vmqmp.MigrationResult:
        res = migrate(*args, **kwargs)
        seen["n1"] = res.source_status
        return res

    monkeypatch.setattr(vmqmp, "migrate", spy)
    # the order of the QMP commands (both nodes) and of the requests to the target
    order: list[str] = []
    execute = QMPClient.execute

    async def spy_execute(self: QMPClient, cmd: str, arguments: Any = None, oob: bool = False) -> Any:
        order.append(cmd)
        return await execute(self, cmd, arguments, oob)

    monkeypatch.setattr(QMPClient, "execute", spy_execute)
    call = nodes.call

    def spy_call(node: str, args: Mapping[str, Any], timeout: float) -> Mapping[str, Any]:
        order.append(f"request {args['action']}")
        return call(node, args, timeout)

    for p in nodes.plugins.values():
        p.peer = spy_call
    close = vmqmp._close

    async def spy_close(client: QMPClient) -> None:
        order.append("close")
        await close(client)

    monkeypatch.setattr(vmqmp, "_close", spy_close)
    env1 = nodes.envs["n1"]
    assert nodes.plugins["n1"].migrate_live(env1.env, SID, nodes.conf("n1"), "n2", commit), env1.text()
    # SAFETY order: the source is told to quit before the target is asked to resume, and the
    # target's `cont` follows (the resume goes out inside the migration's QMP session, after its quit)
    steps = [c for c in order if c in ("migrate", "quit", "request resume", "cont")]
    assert steps == ["migrate", "quit", "request resume", "cont"], order
    # ... and the migration's session closes only after that (its close is not in the guest's
    # pause): the target's resume session closes first, then the source's
    after_quit = order[order.index("quit") :]
    assert [c for c in after_quit if c in ("request resume", "cont", "close")] == [
        "request resume", "cont", "close", "close",
    ], order  # fmt: skip
    # (QEMU says "completed" a moment before it names its stopped guest postmigrate: the session waits)
    assert seen == {"n1": "postmigrate", "n2": "paused", "marker": "True"}, seen
    assert nodes.requests == [("n2", "listen"), ("n2", "resume")]

    # the target runs the guest (no second boot: its one QEMU, launched -incoming), the source is gone
    assert nodes.status("n2") == "running"
    tgt_pids = nodes.pids("n2")
    assert tgt_pids and not set(tgt_pids) & set(src_pids)
    # launched with room for a running guest's descriptors (~75: virtio's eventfds, opened by the
    # `cont` of a migrated guest), so no table grows in the guest's pause (agents/shspawn.py)
    st2 = nodes.plugins["n2"].load_state("n2", NAME)
    assert st2 is not None and _fd_table(st2.pid) == VmPlugin.fd_table
    # the source's QEMU exits (told to quit) and is forgotten off the migration's path, soon after
    wait_until(lambda: not any(procutil.pid_alive(p) for p in src_pids), timeout=10)
    wait_until(lambda: nodes.plugins["n1"].load_state("n1", NAME) is None, timeout=10)
    wait_until(lambda: any("source QEMU gone" in m for _, m in env1.lines), timeout=10)
    assert not nodes.plugins["n2"].incoming_path("n2", NAME).exists()
    done = [m for lvl, m in env1.lines if "live migration to n2 done in" in m]
    assert len(done) == 1 and " ms, downtime " in done[0] and "(QEMU)" in done[0], env1.text()
    # QEMU's own figures, read once its main loop settled the migration (0 before that)
    total = re.search(r"done in (\d+) ms", done[0])
    assert total is not None and int(total.group(1)) > 0, done[0]
    print("\n" + done[0])

    # the target's LRM, told `started`, adopts the running QEMU instead of booting a second one
    env2 = nodes.envs["n2"]
    assert exec_resource_agent(env2.env, SID, nodes.conf("n2"), "started", {}) == ExitCode.SUCCESS
    assert nodes.pids("n2") == tgt_pids
    assert not any("starting service" in m for _, m in env2.lines), env2.text()


def test_migration_through_the_agent_protocol(nodes: Nodes) -> None:
    """``exec_resource_agent(..., "migrate")`` (online) migrates live; without a commit step."""
    start_on_n1(nodes)
    env1 = nodes.envs["n1"]
    rc = exec_resource_agent(env1.env, SID, nodes.conf("n1"), "migrate", {"target": "n2"})
    assert rc == ExitCode.SUCCESS, env1.text()
    assert nodes.status("n2") == "running" and not nodes.pids("n1")


def test_failed_commit_keeps_the_guest_running_on_the_source(nodes: Nodes) -> None:
    src_pids = start_on_n1(nodes)

    def commit() -> None:
        raise RuntimeError("the store said no")

    env1 = nodes.envs["n1"]
    assert not nodes.plugins["n1"].migrate_live(env1.env, SID, nodes.conf("n1"), "n2", commit)
    # the target's copy (complete, paused) was killed; the source's (postmigrate) runs again
    assert nodes.requests == [("n2", "listen"), ("n2", "abort")]
    assert nodes.status("n1") == "running" and nodes.pids("n1") == src_pids
    assert not nodes.pids("n2") and not nodes.plugins["n2"].incoming_path("n2", NAME).exists()
    assert any("location did not move (the store said no)" in m for _, m in env1.lines), env1.text()


def test_no_commit_unless_the_source_qemu_stopped(nodes: Nodes, monkeypatch: pytest.MonkeyPatch) -> None:
    """SAFETY: the hand-over checks (in the migration's own QMP session) that the source is stopped."""
    src_pids = start_on_n1(nodes)
    migrate = vmqmp.migrate

    def as_if_running(*args: Any, handover: Any, **kwargs: Any) -> vmqmp.MigrationResult:
        return migrate(
            *args, handover=lambda r: handover(dataclasses.replace(r, source_status="running")), **kwargs
        )

    monkeypatch.setattr(vmqmp, "migrate", as_if_running)
    commits: list[bool] = []
    env1 = nodes.envs["n1"]
    assert not nodes.plugins["n1"].migrate_live(
        env1.env, SID, nodes.conf("n1"), "n2", lambda: commits.append(True)
    )
    assert commits == []  # the location never moved
    assert nodes.requests == [("n2", "listen"), ("n2", "abort")]
    assert nodes.status("n1") == "running" and nodes.pids("n1") == src_pids
    assert not nodes.pids("n2")
    assert any("the source QEMU is 'running', not stopped" in m for _, m in env1.lines), env1.text()


def test_failed_migration_keeps_the_guest_running_on_the_source(nodes: Nodes) -> None:
    src_pids = start_on_n1(nodes)
    nodes.uri_override = f"tcp:127.0.0.1:{free_port()}"  # nothing listens there: QEMU's migrate fails
    env1 = nodes.envs["n1"]
    assert exec_resource_agent(env1.env, SID, nodes.conf("n1"), "migrate", {"target": "n2"}) == ExitCode.ERROR
    assert nodes.requests == [("n2", "listen"), ("n2", "abort")]
    assert nodes.status("n1") == "running" and nodes.pids("n1") == src_pids
    assert not nodes.pids("n2")
    assert ("err", f"service {SID} not moved (migration error)") in env1.lines, env1.text()

    # a target that refuses: nothing happens to the guest either
    nodes.requests.clear()
    nodes.refuse = "node 'n2' is fencing itself"
    env1.lines.clear()
    assert not nodes.plugins["n1"].migrate_live(env1.env, SID, nodes.conf("n1"), "n2")
    assert nodes.requests == [("n2", "listen"), ("n2", "abort")]
    assert any("cannot take the live migration: node 'n2' is fencing itself" in m for _, m in env1.lines)
    assert nodes.status("n1") == "running" and nodes.pids("n1") == src_pids


def test_an_incoming_qemu_is_never_adopted_and_is_reaped(nodes: Nodes) -> None:
    p2, env2 = nodes.plugins["n2"], nodes.envs["n2"]
    cd = nodes.conf("n2")
    uri = p2.incoming_listen(env2.env, SID, cd, "127.0.0.1")
    assert uri.startswith("tcp:127.0.0.1:")
    incoming = nodes.pids("n2")
    assert incoming and nodes.status("n2") == "inmigrate"
    # nothing came in: it is not resumed, and the node does not count it as the running service
    with pytest.raises(MigrationError, match="not resuming"):
        p2.incoming_resume(env2.env, SID, cd)
    assert not p2.check_running(env2.env, SID, cd)

    # a start kills it and boots the guest afresh
    assert exec_resource_agent(env2.env, SID, cd, "started", {}) == ExitCode.SUCCESS, env2.text()
    assert not any(procutil.pid_alive(p) for p in incoming)
    assert nodes.status("n2") == "running" and not set(nodes.pids("n2")) & set(incoming)
    assert ("info", f"service {SID}: killing its incoming QEMU (never resumed)") in env2.lines
    # abort never touches a running (resumed or started) guest
    assert not p2.incoming_abort(env2.env, SID, cd)
    assert nodes.status("n2") == "running"
    assert exec_resource_agent(env2.env, SID, cd, "stopped", {}) == ExitCode.SUCCESS

    # the node kills an incoming QEMU never resumed within its deadline
    p2.incoming_deadline = 0.5
    p2.incoming_listen(env2.env, SID, cd, "127.0.0.1")
    incoming = nodes.pids("n2")
    t0 = time.monotonic()
    wait_until(lambda: not any(procutil.pid_alive(p) for p in incoming), timeout=10)
    assert time.monotonic() - t0 < 8
    wait_until(lambda: not p2.incoming_path("n2", NAME).exists(), timeout=5)
    assert p2.load_state("n2", NAME) is None


def test_qmp_calls_report_refusals(nodes: Nodes) -> None:
    start_on_n1(nodes)
    path = nodes.plugins["n1"].qmp_path("n1", NAME)
    (status,) = qmp_calls(path, ("query-status", None))
    assert status["status"] == "running"
    with pytest.raises(MigrationError, match="no-such-command"):
        qmp_calls(path, ("no-such-command", {"x": 1}))


def test_a_migration_back_at_once_waits_for_the_leaving_qemu(nodes: Nodes) -> None:
    """The source forgets its QEMU after it exited, in the background: a migration back (or a
    start) meanwhile waits for that instead of taking the leaving QEMU for a running copy."""
    start_on_n1(nodes)
    p1, p2 = nodes.plugins["n1"], nodes.plugins["n2"]
    env1, env2 = nodes.envs["n1"], nodes.envs["n2"]
    for _ in range(3):
        assert p1.migrate_live(env1.env, SID, nodes.conf("n1"), "n2"), env1.text()
        assert p2.migrate_live(env2.env, SID, nodes.conf("n2"), "n1"), env2.text()
    assert nodes.status("n1") == "running" and nodes.pids("n1")
    wait_until(lambda: not nodes.pids("n2") and p2.load_state("n2", NAME) is None, timeout=10)
    # a start right after a migration away (the target's copy killed: a fence there, a recovery
    # here): it waits for the leaving QEMU, then boots afresh instead of "already running"
    old = nodes.pids("n1")
    assert p1.migrate_live(env1.env, SID, nodes.conf("n1"), "n2"), env1.text()
    st2 = p2.load_state("n2", NAME)
    assert st2 is not None and st2.cgroup
    procutil.cgroup_kill(Path(st2.cgroup))
    rc = exec_resource_agent(env1.env, SID, nodes.conf("n1"), "started", {})
    assert rc == ExitCode.SUCCESS, env1.text()
    assert nodes.status("n1") == "running" and not set(nodes.pids("n1")) & set(old)
