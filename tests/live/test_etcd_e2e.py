"""End-to-end on etcd: the cluster across simulated hosts (issue #5).

Each node runs in its own network namespace together with its own etcd
member (``ha-cluster init --store etcd --netns``): a simulated host. The
store, the leases and the store half of quorum come from a real 3-member
etcd cluster. Every test ends by checking, from the services' own markers,
that no service ever ran on two nodes at the same moment, and the fixture
checks that nothing is left behind (processes, namespaces, bridge).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.livecluster import LiveCluster, wait_for
from tests.live.test_operations import scrape, value

pytestmark = pytest.mark.timeout(120)


def _need_tools() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("etcd e2e tests need root and iproute2 (network namespaces; 'make deps')")
    if shutil.which("etcd") is None:
        pytest.fail("etcd not installed: run 'make deps' (installs the Debian package etcd-server)")


def _leftovers(c: LiveCluster, tag: str, etcd_pids: list[int]) -> list[str]:
    out = []
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    out += [f"namespace {line.split()[0]}" for line in namespaces.splitlines() if f"pyha-{tag}-" in line]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=False).stdout
    out += [f"link {line.split(':')[1].strip()}" for line in links.splitlines() if tag in line]
    out += [f"etcd pid {p}" for p in etcd_pids if not dead(p)]
    for n in c.nodes:
        for what in ("ha-node", "ha-watchdog"):
            pid = c.pid(n, what)
            if not dead(pid):
                out.append(f"{n} {what} pid {pid}")
    return out


@contextlib.contextmanager
def etcd_cluster(root: Path, nodes: int = 3) -> Iterator[LiveCluster]:
    """A live cluster on its own etcd; afterwards: no double run, nothing left behind."""
    _need_tools()
    c = LiveCluster(root, nodes, store="etcd")
    tag = c.config().network["tag"]  # type: ignore[index]
    try:
        yield c
        assert c.overlaps() == [], "a service ran on two nodes at once"
    finally:
        etcd_pids = [int(p.read_text()) for p in (c.dir / "run").glob("*/etcd.pid")]
        c.close()
    assert _leftovers(c, tag, etcd_pids) == [], "ha-cluster destroy left something behind"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LiveCluster]:
    with etcd_cluster(tmp_path) as c:
        yield c


def start(c: LiveCluster, placement: dict[str, str]) -> None:
    for sid, node in placement.items():
        c.add_service(sid, node)
    c.up()
    for sid, node in placement.items():
        c.wait_serving(sid, 30, on=node)


def fired(c: LiveCluster, node: str) -> bool:
    return "FIRING" in c.watchdog_log(node)


def dead(pid: int | None) -> bool:
    if pid is None:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(") ")[1][0] == "Z"
    except (FileNotFoundError, IndexError):
        return True


def all_answering(c: LiveCluster, sids: list[str], seconds: float) -> list[str]:
    """Poll every service for SECONDS; the misses (service, time) seen."""
    misses = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for sid in sids:
            if c.ask(sid) is None:
                misses.append(f"{sid} at +{time.monotonic() - t0:.1f}s")
        time.sleep(0.1)
    return misses


def test_host_crash_node_and_its_etcd_member(cluster: LiveCluster) -> None:
    """SIGKILL of a node together with its etcd member: the survivors recover its services."""
    start(cluster, {"proc:a": "node2", "proc:b": "node2", "proc:c": "node3"})
    t0 = time.monotonic()
    cluster.kill("node2", with_etcd=True)
    for sid in ("proc:a", "proc:b"):
        cluster.wait_serving(sid, 30, not_on="node2")
    took = time.monotonic() - t0
    assert took < 15, f"failover took {took:.1f}s"
    assert cluster.serving_node("proc:c") == "node3"
    logs = "".join(cluster.log(n) for n in cluster.nodes)
    assert "fencing: acknowledged - got agent lock for node 'node2'" in logs
    # the host comes back: its etcd member rejoins, the node goes online again
    cluster.up("node2")
    wait_for(lambda: cluster.manager_status().node_status.get("node2") == "online", 30, "node2 online")
    assert cluster.etcd_leader() is not None


def test_a_node_without_etcd_member_is_a_client_and_fences_when_cut_off(tmp_path: Path) -> None:
    """4 nodes: etcd members on node1-3 only (etcd's advice: 3 or 5); node4 is their client.

    Cut off, node4 reaches neither bus nor store majority: it fences itself and its
    service runs again on the majority; the etcd members are not disturbed.
    """
    with etcd_cluster(tmp_path, nodes=4) as c:
        assert c.config().etcd is not None and sorted(c.config().etcd.members) == ["node1", "node2", "node3"]
        start(c, {"proc:a": "node4", "proc:b": "node1"})
        status = c.cli("cli.ha_cluster", "status", str(c.dir)).stdout
        line4 = next(x for x in status.splitlines() if x.startswith("node4:"))
        assert "running pid" in line4 and "etcd" not in line4, status
        refused = c.cli("cli.ha_cluster", "etcd-kill", str(c.dir), "node4", check=False)
        assert refused.returncode == 2 and "no etcd member" in refused.stderr
        pid4 = c.pid("node4")
        c.partition("node4")
        wait_for(lambda: fired(c, "node4"), 15, "node4's watchdog to fire")
        wait_for(lambda: dead(pid4), 10, "node4's daemon to be killed by its watchdog")
        c.wait_serving("proc:a", 30, not_on="node4")
        assert c.serving_node("proc:b") == "node1"
        assert not any(fired(c, n) for n in ("node1", "node2", "node3"))
        assert c.etcd_leader() in ("node1", "node2", "node3")


def test_add_node_and_remove_node_online_on_etcd_with_namespaces(cluster: LiveCluster) -> None:
    """A 4th node joins the running etcd cluster (its own namespace, an etcd client only),
    takes a migrated service, and is removed again: its namespace goes, nobody is fenced,
    nobody loses quorum. A node running an etcd member is not removed online (etcd's own
    membership would change)."""
    c = cluster
    start(c, {"proc:a": "node3"})
    out = c.cli("cli.ha_cluster", "add-node", str(c.dir)).stdout
    c.nodes.append("node4")  # LiveCluster.close() stops what is left of it
    assert "node4 added" in out and "node4 up (quorate)" in out, out
    conf = c.config()
    assert conf.network is not None and conf.etcd is not None
    ns4 = conf.netns["node4"]
    address = conf.network["nodes"]["node4"][3]
    assert conf.nodes["node4"].startswith(f"tcp://{address}:") and "node4" not in conf.etcd.members
    c.hosts.append(address)
    wait_for(lambda: c.manager_status().node_status.get("node4") == "online", 20, "node4 online")
    c.manager("migrate", "proc:a", "node4")
    c.wait_serving("proc:a", 30, on="node4")

    refused = c.cli("cli.ha_cluster", "remove-node", str(c.dir), "node2", check=False)
    assert refused.returncode == 2 and "runs one of the cluster's etcd members" in refused.stderr

    out = c.cli("cli.ha_cluster", "remove-node", str(c.dir), "node4", "--timeout", "30").stdout
    assert "node4 stopped" in out and "node4 removed" in out, out
    c.wait_serving("proc:a", 5, not_on="node4")
    conf = c.config()
    assert sorted(conf.nodes) == ["node1", "node2", "node3"] and "node4" not in conf.netns
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    assert ns4 not in namespaces
    wait_for(lambda: c.manager_status().node_status.get("node4") == "gone", 20, "node4 gone for the master")
    logs = "".join(c.log(n) for n in ("node1", "node2", "node3"))
    assert "FENCE: Try to fence node 'node4'" not in logs and "quorum lost" not in logs
    c.nodes.remove("node4")


def test_partition_cuts_node_and_etcd_member_off_together(cluster: LiveCluster) -> None:
    """The cut-off node loses bus and store quorum and fences itself; the majority recovers."""
    start(cluster, {"proc:a": "node3", "proc:b": "node1"})
    pid3 = cluster.pid("node3")
    t0 = time.monotonic()
    cluster.partition("node3")
    wait_for(lambda: "not quorate" in cluster.log("node3"), 10, "node3 to lose quorum")
    wait_for(lambda: fired(cluster, "node3"), 15, "node3's watchdog to fire")
    wait_for(lambda: dead(pid3), 10, "node3's daemon to be killed by its watchdog")
    cluster.wait_serving("proc:a", 30, not_on="node3")
    assert time.monotonic() - t0 < 25
    assert cluster.serving_node("proc:b") == "node1"  # the majority was never disturbed
    assert not fired(cluster, "node1") and not fired(cluster, "node2")
    assert cluster.manager_status().master_node in ("node1", "node2")
    cluster.heal("node3")
    cluster.up("node3")
    wait_for(lambda: cluster.manager_status().node_status.get("node3") == "online", 30, "node3 to rejoin")


def test_etcd_member_loss_keeps_the_cluster_working(cluster: LiveCluster) -> None:
    """One etcd member killed (the leader): services keep answering, a migrate still works."""
    placement = {"proc:a": "node1", "proc:b": "node2", "proc:c": "node3"}
    start(cluster, placement)
    leader = cluster.etcd_leader()
    assert leader is not None
    cluster.etcd_kill(leader)
    misses = all_answering(cluster, list(placement), 4.0)
    assert misses == [], f"services stopped answering after one etcd member died: {misses}"
    assert not any(fired(cluster, n) for n in cluster.nodes)
    # the control plane still works on the two remaining members
    sid = next(s for s, n in placement.items() if n == leader)
    target = next(n for n in cluster.nodes if n != leader)
    cluster.manager("migrate", sid, target)
    cluster.wait_serving(sid, 30, on=target)
    cluster.wait_state(sid, "started", 15, node=target)
    cluster.etcd_start(leader)
    wait_for(cluster.etcd_leader, 15, "all three etcd members to agree on a leader")
    assert all_answering(cluster, list(placement), 1.0) == []


def test_etcd_quorum_loss_fences_every_node_then_everything_resumes(cluster: LiveCluster) -> None:
    """Two of three etcd members killed: no node may act, every watchdog fires; heal and restart."""
    placement = {"proc:a": "node1", "proc:b": "node2", "proc:c": "node3"}
    start(cluster, placement)
    pids = {n: cluster.pid(n) for n in cluster.nodes}
    cluster.etcd_kill("node2", "node3")
    wait_for(lambda: all(fired(cluster, n) for n in cluster.nodes), 20, "every node's watchdog to fire")
    wait_for(lambda: all(dead(p) for p in pids.values()), 10, "every node's daemon to be killed")
    for n in cluster.nodes:
        # the bus still worked: the store half of quorum took the node out, and the
        # WatchdogActor stopped petting on it
        log = cluster.log(n)
        assert "not quorate: no store round trip succeeded" in log, n
        assert "quorum lost: stop petting the watchdog" in log, n
    assert all(cluster.ask(sid) is None for sid in placement), "a service survived its node's fencing"
    # heal etcd, restart the nodes: everything resumes where it was
    cluster.etcd_start("node2", "node3")
    cluster.up()
    for sid, node in placement.items():
        cluster.wait_serving(sid, 30, on=node)


def test_master_failover(cluster: LiveCluster) -> None:
    """The master node dies: a new master takes over (after the manager lease) and recovers."""
    placement = {"proc:a": "node1", "proc:b": "node2", "proc:c": "node3"}
    start(cluster, placement)
    master = cluster.manager_status().master_node
    assert master is not None
    cluster.kill(master)
    wait_for(lambda: cluster.manager_status().master_node not in (None, master), 30, "a new master")
    victims = [s for s, n in placement.items() if n == master]
    for sid in victims:
        cluster.wait_serving(sid, 30, not_on=master)
    assert cluster.manager_status().node_status.get(master) in ("unknown", "fence")
    for sid, node in placement.items():
        if node != master:
            assert cluster.serving_node(sid) == node


def test_at_rest_the_nodes_watch_etcd_instead_of_polling(cluster: LiveCluster) -> None:
    """Issues #15/#17: the store watcher and the event publisher sleep on the etcd watch."""
    placement = {"proc:a": "node1", "proc:b": "node2", "proc:c": "node3"}
    start(cluster, placement)
    time.sleep(2)  # the starts settle
    cfg = cluster.config()
    where = {n: cfg.metrics_address(n) for n in cluster.nodes}
    window = 8.0
    before = {n: scrape(*where[n]) for n in cluster.nodes}
    time.sleep(window)
    after = {n: scrape(*where[n]) for n in cluster.nodes}

    def calls(n: str, op: str) -> float:
        name = "pyha_store_request_seconds_count"
        return value(after[n], name, op=op) - value(before[n], name, op=op)

    master = cluster.manager_status().master_node
    for n in cluster.nodes:
        assert "etcd-watch-pyha: watching" in cluster.log(n), n
        # polling looked 30 times a second (watcher 10/s, publisher 20/s); now the safety
        # polls (5 s each) and a health probe when no lease renewal was fresh enough
        assert calls(n, "changed_since") <= 1.5 * window, (n, calls(n, "changed_since"))
        # the other nodes' lease revisions come with the watch: no observation reads (the
        # master still checks its own lease before it writes manager_status)
        if n != master:
            assert calls(n, "lease_info") == 0, (n, calls(n, "lease_info"))
    # a change is still seen at once: an admin's migrate goes through
    cluster.manager("migrate", "proc:a", "node2")
    cluster.wait_serving("proc:a", 30, on="node2")
