"""A ``vm:`` service on a live 3-node cluster (issue #12, first slice): QEMU guests under HA.

``ha-manager add vm:100`` (the built-in guest: the host's kernel and a busybox
initramfs, TCG), the cluster boots it on node1 inside node1's service cgroup,
its health check answers with the guest's boot id; ``ha-manager relocate``
moves it to node2: the source's QEMU is gone, node2's answers with a NEW boot
id (a relocation is a restart), and at no moment did two QEMU processes of
the VM run (sampled every 50 ms over the whole move). Then ``ha-manager
migrate`` to node3 is a QEMU live migration: node3's QEMU answers with the
SAME boot id and a longer uptime, node3 booted nothing (it adopted the QEMU
that came in), and two QEMU processes existed only during the hand-over.
Two boots of the guest in all.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from agents.vm import GuestAnswer, VmPlugin, ping_guest
from agents.vmincoming import STANDBY
from bench.livecluster import LiveCluster, wait_for

pytestmark = pytest.mark.timeout(180)

SID = "vm:100"


def qemu_copies(sid: str) -> dict[int, str]:
    """pid -> cgroup of every QEMU process of ``sid`` on this host."""
    needle = f"\0-name\0{sid},".encode()
    out: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
            if needle not in cmdline or not cmdline.split(b"\0")[0].endswith(b"qemu-system-x86_64"):
                continue
            stat = Path(f"/proc/{entry.name}/stat").read_bytes()
            if stat[stat.rindex(b")") + 2 :].startswith(b"Z"):
                continue  # a zombie waiting for its reaper runs nothing
            out[int(entry.name)] = Path(f"/proc/{entry.name}/cgroup").read_text().strip()
        except (OSError, ValueError):
            continue
    return out


def standbys(paths: VmPlugin, name: str = "100") -> dict[str, int]:
    """node -> pid of its standby QEMU of the VM (agents/vmstandby.py: launched -incoming defer -S,
    never resumed, not the service; its marker says ``standby``)."""
    out: dict[str, int] = {}
    for node in ("node1", "node2", "node3"):
        mark, st = paths.marker(node, name), paths.load_state(node, name)
        if mark is not None and mark[0] == STANDBY and st is not None:
            out[node] = st.pid
    return out


def standbys_on(paths: VmPlugin, *nodes: str) -> dict[str, int] | None:
    """The standbys when exactly ``nodes`` hold one, else None."""
    found = standbys(paths)
    return found if sorted(found) == sorted(nodes) else None


def never_resumed(paths: VmPlugin, pid: int, cgroup: str) -> bool:
    """A QEMU launched ``-incoming`` whose node still marks it (a standby, or a migration's not
    resumed yet): it runs no guest code. The marker is written before the launch and removed only
    after the kill or after the resume, so looking at it after the process was seen is safe."""
    try:
        incoming = b"\0-incoming\0" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # gone meanwhile
    node = cgroup.rsplit("/", 2)[-2]
    return incoming and paths.incoming_path(node, "100").exists()


class Sampler(threading.Thread):
    """Counts the VM's QEMU processes that may run its guest (never-resumed ones left out), every
    50 ms until stopped."""

    def __init__(self, sid: str, paths: VmPlugin) -> None:
        super().__init__(daemon=True)
        self.sid = sid
        self.paths = paths
        self.most = 0
        self.samples = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            copies = qemu_copies(self.sid)
            running = [p for p, cg in copies.items() if not never_resumed(self.paths, p, cg)]
            self.most = max(self.most, len(running))
            self.samples += 1
            self.halt.wait(0.05)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_vm_service_boots_and_relocates_with_a_new_boot(cluster: LiveCluster) -> None:
    t0 = time.monotonic()
    cluster.manager("add", SID, "--node", "node1", "--memory", "256", "--stop-timeout", "20")
    shown = json.loads(cluster.manager("config", "--output-format", "json").stdout)["resources"]
    assert [(r["sid"], r.get("memory"), r.get("stop_timeout")) for r in shown] == [(SID, "256", "20")]
    cluster.up()

    state_dir = cluster.config().state_dir
    paths = VmPlugin(state_dir, cgroup_base=None)  # the nodes' own socket and state paths

    def answer(node: str) -> GuestAnswer | None:
        return ping_guest(paths.health_path(node, "100"), timeout=1.0)

    first = wait_for(lambda: answer("node1"), 90, "vm:100 answering on node1")
    assert isinstance(first, GuestAnswer)
    cluster.wait_state(SID, "started", node="node1")
    booted = time.monotonic() - t0
    # node2 and node3 hold a standby QEMU each (launched ahead of a live migration, never running)
    waiting = wait_for(lambda: standbys_on(paths, "node2", "node3"), 30, "standbys on node2, node3")
    assert isinstance(waiting, dict) and sorted(waiting) == ["node2", "node3"], waiting
    (pid1, cg1), *more = [(p, cg) for p, cg in qemu_copies(SID).items() if p not in waiting.values()]
    assert not more and cg1.endswith("/node1/vm:100"), (pid1, cg1, more)
    assert paths.load_state("node1", "100") is not None
    for node, pid in waiting.items():
        assert qemu_copies(SID)[pid].endswith(f"/{node}/vm:100")  # in its node's service cgroup
    print(f"\nstandby QEMU RSS: {', '.join(f'{n} {rss_kb(p) / 1024:.1f} MiB' for n, p in waiting.items())}")

    sampler = Sampler(SID, paths)
    sampler.start()
    try:
        t1 = time.monotonic()
        cluster.manager("relocate", SID, "node2")
        second = wait_for(lambda: answer("node2"), 90, "vm:100 answering on node2")
        moved = time.monotonic() - t1
        cluster.wait_state(SID, "started", node="node2")
    finally:
        sampler.halt.set()
        sampler.join(5)
    assert isinstance(second, GuestAnswer)
    assert second.boot_id != first.boot_id  # relocate = stop + start: a new boot

    # the source's QEMU is gone (stopped by ACPI power-down, not killed), its state and sockets too;
    # node2's standby was killed by the start there (a relocation boots afresh), node1 holds one now
    assert "killing its standby QEMU (never resumed)" in cluster.log("node2")
    waiting = wait_for(lambda: standbys_on(paths, "node1", "node3"), 30, "standbys on node1, node3")
    assert isinstance(waiting, dict)
    copies = {p: cg for p, cg in qemu_copies(SID).items() if p not in waiting.values()}
    assert len(copies) == 1 and next(iter(copies.values())).endswith("/node2/vm:100"), copies
    assert pid1 not in qemu_copies(SID)
    assert answer("node1") is None
    node1_log = cluster.log("node1")
    assert "stopping service vm:100" in node1_log
    assert "still running" not in node1_log and "killing" not in node1_log, node1_log[-2000:]
    # never two copies at once over the whole move (standbys are not copies: they run nothing)
    assert sampler.samples > 20 and sampler.most == 1, (sampler.samples, sampler.most)

    # live migration node2 -> node3 (issue #12): the same boot goes on, node3 boots nothing
    standby3 = waiting["node3"]
    sampler = Sampler(SID, paths)
    sampler.start()
    try:
        t2 = time.monotonic()
        cluster.manager("migrate", SID, "node3")
        cluster.wait_state(SID, "started", node="node3", timeout=60)
        migrated = time.monotonic() - t2
        third = wait_for(lambda: answer("node3"), 30, "vm:100 answering on node3")
    finally:
        sampler.halt.set()
        sampler.join(5)
    assert isinstance(third, GuestAnswer)
    assert third.boot_id == second.boot_id and third.uptime > second.uptime, (second, third)
    # node3's guest runs in the QEMU launched there ahead of time as a standby
    st3 = paths.load_state("node3", "100")
    assert st3 is not None and st3.pid == standby3 and paths.marker("node3", "100") is None
    waiting = wait_for(lambda: standbys_on(paths, "node1", "node2"), 30, "standbys on node1, node2")
    assert isinstance(waiting, dict)
    copies = {p: cg for p, cg in qemu_copies(SID).items() if p not in waiting.values()}
    assert list(copies) == [standby3] and copies[standby3].endswith("/node3/vm:100"), copies
    assert answer("node2") is None
    # two processes only while the guest was handed over (the target's waits paused, -incoming -S)
    assert sampler.samples > 5 and sampler.most <= 2, (sampler.samples, sampler.most)
    node2_log, node3_log = cluster.log("node2"), cluster.log("node3")
    done = [ln for ln in node2_log.splitlines() if "service vm:100: live migration to node3 done in" in ln]
    assert len(done) == 1 and "downtime" in done[0], node2_log[-3000:]
    assert "standby QEMU waiting for a live migration" in node3_log
    assert "guest resumed here after its live migration" in node3_log
    assert "starting service vm:100" not in node3_log, node3_log[-3000:]  # adopted, not booted
    print(
        f"\nvm:100 booted and healthy {booted:.1f}s after add; relocated (new boot) in {moved:.1f}s; "
        f"live-migrated (same boot) in {migrated:.1f}s from the command: {done[0].split('live migration')[1]}"
    )

    # the service removed from HA (its guest goes on running, unmanaged, as the reference's):
    # every node's standby goes with it
    cluster.manager("remove", SID)

    def only_node3() -> bool:
        markers = [n for n in ("node1", "node2", "node3") if paths.incoming_path(n, "100").exists()]
        return list(qemu_copies(SID)) == [standby3] and not standbys(paths) and not markers

    wait_for(only_node3, 30, "only node3's QEMU left, no standby, no marker")
    assert "killing its standby QEMU (its service was removed)" in cluster.log("node1")
