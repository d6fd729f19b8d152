"""``make demo-vm``: ``make demo`` with QEMU guests (issue #12): two ``vm:`` services, a node killed.

1. ``ha-cluster init`` a 3-node cluster in a temporary directory and ``ha-manager add``
   two ``vm:`` services with the built-in guest (agents/guestimage.py): vm:101 on
   node2, vm:102 on node3; start the nodes.
2. Wait until both guests answer their health check (over virtio-serial: boot id and
   uptime) and say where each runs and how long its boot took.
3. Live-migrate vm:102 from node3 to node1 (``ha-manager migrate``): print QEMU's
   own total time and downtime (node3's log) and the time from the command until
   the guest answers from node1, with the SAME boot id.
4. SIGKILL node2's whole process tree (its daemon, watchdog and QEMU).
5. Poll until vm:101 answers from another node: print the time from the kill, and
   how much of it was the guest's own boot (its uptime at that answer) and how much
   the cluster (detection, fencing, recovery, QEMU start).
6. Check that no guest answered from two nodes at once and that the recovered guest
   is a new boot; shut everything down and remove the directory.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from admin.cluster import ClusterConfig
from agents.vm import GuestAnswer, VmPlugin, kvm_requested, ping_guest
from cli.demo import PY, run

NODES = ("node1", "node2", "node3")


def answers(plugin: VmPlugin, name: str) -> dict[str, GuestAnswer]:
    """Node -> the guest's answer, for every node where guest NAME answers its health check.

    (A node's standby QEMU of the VM, agents/vmstandby.py, has the socket but no guest: skipped.)"""
    out = {}
    for node in NODES:
        path = plugin.health_path(node, name)
        if plugin.marker(node, name) is not None:
            continue
        if path.exists() and (ans := ping_guest(path, timeout=0.5)) is not None:
            out[node] = ans
    return out


def live_migration(
    cluster: Path, plugin: VmPlugin, sid: str, source: str, target: str, was: GuestAnswer
) -> bool:
    """``ha-manager migrate`` SID to TARGET, timed; True if the same boot answers from there."""
    name = sid.split(":")[1]
    print(f"== live migration of {sid} from {source} to {target}")
    t0 = time.monotonic()
    run("cli.ha_manager", "--cluster", str(cluster), "migrate", sid, target)
    ans: GuestAnswer | None = None
    while ans is None and time.monotonic() - t0 < 60:
        ans = answers(plugin, name).get(target)
        time.sleep(0.02)
    took = time.monotonic() - t0
    if ans is None:
        print(f"demo-vm: {sid} does not answer from {target}")
        return False
    log = (cluster / "logs" / f"{source}.log").read_text(errors="replace")
    mark = f"{sid}: live migration to {target} done in"
    done = [ln.split(f"{sid}: ", 1)[1] for ln in log.splitlines() if mark in ln]
    same = ans.boot_id == was.boot_id
    print(f"   {sid} answers from {target} {took:.2f} s after the command "
          f"({'the same boot' if same else 'A NEW BOOT'}, up {ans.uptime:.1f} s); "
          f"{source}: {done[-1] if done else 'no migration line in its log'}")  # fmt: skip
    return same


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="pyha-demo-vm-"))
    cluster = root / "cluster"
    print(f"== demo cluster with QEMU guests in {cluster} ({'KVM' if kvm_requested() else 'TCG'})")
    try:
        print(run("cli.ha_cluster", "init", str(cluster), "--nodes", "3"), end="")
        placement = {"vm:101": "node2", "vm:102": "node3"}
        for sid, node in placement.items():
            run("cli.ha_manager", "--cluster", str(cluster), "add", sid, "--node", node)
        plugin = VmPlugin(ClusterConfig.load(cluster).state_dir, cgroup_base=None)
        t0 = time.monotonic()
        print(run("cli.ha_cluster", "up", str(cluster)), end="")
        first: dict[str, tuple[str, GuestAnswer]] = {}
        while time.monotonic() - t0 < 120 and len(first) < len(placement):
            for sid in placement:
                if sid not in first and (seen := answers(plugin, sid.split(":")[1])):
                    node, ans = next(iter(seen.items()))
                    first[sid] = (node, ans)
                    print(f"   {sid} answers from {node} after {time.monotonic() - t0:.1f} s "
                          f"(guest up {ans.uptime:.1f} s, boot id {ans.boot_id[:8]})")  # fmt: skip
            time.sleep(0.2)
        if len(first) < len(placement):
            print(f"demo-vm: guests did not all come up: {sorted(set(placement) - set(first))}")
            return 1
        print(run("cli.ha_manager", "--cluster", str(cluster), "status"), end="")

        live_ok = live_migration(cluster, plugin, "vm:102", "node3", "node1", first["vm:102"][1])

        victim, sid = "node2", "vm:101"
        name = sid.split(":")[1]
        print(f"== SIGKILL of {victim}'s whole process tree (daemon, watchdog, QEMU)")
        t_kill = time.monotonic()
        run("cli.ha_cluster", "kill", str(cluster), victim)
        back: tuple[float, str, GuestAnswer] | None = None
        twice = False
        while time.monotonic() - t_kill < 120 and back is None:
            seen = answers(plugin, name)
            twice = twice or len(seen) > 1
            for node, ans in seen.items():
                if node != victim:
                    back = (time.monotonic() - t_kill, node, ans)
            time.sleep(0.2)
        if back is None:
            print(f"demo-vm: {sid} was not recovered within 120 s")
            return 1
        took, node, ans = back
        print(f"== failover: {sid} answers again from {node} after {took:.2f} s: the guest's own boot "
              f"{ans.uptime:.1f} s, the cluster {took - ans.uptime:.2f} s (detection, fencing, recovery, "
              f"QEMU start)")  # fmt: skip
        new_boot = ans.boot_id != first[sid][1].boot_id
        print(f"   a new boot (boot id {ans.boot_id[:8]}, was {first[sid][1].boot_id[:8]})" if new_boot
              else "   SAME boot id: the old guest answered?")  # fmt: skip
        print(run("cli.ha_manager", "--cluster", str(cluster), "status"), end="")
        print("== no guest answered from two nodes at once" if not twice else "== a guest answered TWICE")
        return 0 if new_boot and not twice and live_ok else 1
    finally:
        subprocess.run([PY, "-m", "cli.ha_cluster", "down", str(cluster), "--timeout", "60"],
                       capture_output=True, check=False)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
