"""End-to-end: real ha-node processes, real services, real failures (issue #4).

Every test ends by checking, from the services' own markers, that no service
ever ran on two nodes at the same moment, and that nothing configured was lost.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from bench.livecluster import LiveCluster, wait_for

pytestmark = pytest.mark.timeout(180)


def start(c: LiveCluster, placement: dict[str, str]) -> None:
    for sid, node in placement.items():
        c.add_service(sid, node)
    c.up()
    for sid, node in placement.items():
        c.wait_serving(sid, 30, on=node)


def configured(c: LiveCluster) -> set[str]:
    out = c.manager("config", "--output-format", "json").stdout
    return {r["sid"] for r in json.loads(out)["resources"]}


def test_node_sigkill_fails_over_within_seconds(cluster: LiveCluster) -> None:
    start(cluster, {"proc:a": "node2", "proc:b": "node2", "proc:c": "node3"})
    t0 = time.monotonic()
    cluster.kill("node2")
    for sid in ("proc:a", "proc:b"):
        cluster.wait_serving(sid, 30, not_on="node2")
    took = time.monotonic() - t0
    assert took < 15, f"failover took {took:.1f}s"
    assert cluster.serving_node("proc:c") == "node3"
    for sid in ("proc:a", "proc:b"):
        cluster.wait_state(sid, "started")
        assert cluster.service_state(sid)[1] != "node2"
    assert configured(cluster) == {"proc:a", "proc:b", "proc:c"}
    assert "fencing: acknowledged - got agent lock for node 'node2'" in "".join(
        cluster.log(n) for n in cluster.nodes
    )


def test_master_sigkill_new_master_takes_over(cluster: LiveCluster) -> None:
    start(cluster, {"proc:a": "node1", "proc:b": "node2", "proc:c": "node3"})
    master = cluster.manager_status().master_node
    assert master is not None
    victim_services = [
        s for s, n in {"proc:a": "node1", "proc:b": "node2", "proc:c": "node3"}.items() if n == master
    ]
    cluster.kill(master)
    wait_for(lambda: cluster.manager_status().master_node not in (None, master), 30, "a new master")
    for sid in victim_services:
        cluster.wait_serving(sid, 30, not_on=master)
    assert cluster.manager_status().node_status.get(master) in ("unknown", "fence")


def test_hung_daemon_is_fenced_by_its_watchdog(cluster: LiveCluster) -> None:
    start(cluster, {"proc:a": "node3", "proc:b": "node1"})
    pid = cluster.pid("node3")
    assert pid is not None
    cluster.signal("node3", signal.SIGSTOP)  # the daemon hangs: nobody pets its watchdog
    # the watchdog (a separate process) kills the service and the stopped daemon
    wait_for(lambda: cluster.serving_node("proc:a") != "node3", 20, "the watchdog to kill node3's service")
    cluster.wait_serving("proc:a", 30, not_on="node3")
    wd_log = (cluster.dir / "logs" / "node3.watchdog.log").read_text()
    assert "FIRING: no pet" in wd_log

    def gone() -> bool:
        stat = Path(f"/proc/{pid}/stat")
        return not stat.exists() or stat.read_text().split()[2] == "Z"

    wait_for(gone, 10, "the hung daemon to be killed")


def test_lrm_restart_freezes_and_keeps_services_running(cluster: LiveCluster) -> None:
    start(cluster, {"proc:a": "node2"})
    before = cluster.ask("proc:a")
    assert before is not None
    cluster.stop("node2", kind="restart")
    cluster.wait_state("proc:a", "freeze", 20)
    time.sleep(1)
    after = cluster.ask("proc:a")
    assert after is not None and after["pid"] == before["pid"], "the service must keep running, untouched"
    cluster.up("node2")
    cluster.wait_state("proc:a", "started", 20, node="node2")
    time.sleep(1)
    again = cluster.ask("proc:a")
    assert again is not None and again["pid"] == before["pid"], "unfreezing must not restart the service"
    assert len(cluster.copies("proc:a")) == 1


def test_conditional_shutdown_stops_and_recovers_elsewhere(cluster: LiveCluster) -> None:
    start(cluster, {"proc:a": "node2"})
    cluster.stop("node2", kind="shutdown")
    cluster.wait_serving("proc:a", 30, not_on="node2")
    logs = cluster.log("node2")
    assert "got shutdown request with shutdown policy 'conditional'" in logs
    assert "shutdown LRM, stop all services" in logs


def test_conditional_reboot_freezes_and_restarts_on_the_same_node(cluster: LiveCluster) -> None:
    start(cluster, {"proc:a": "node2"})
    cluster.stop("node2", kind="reboot")
    cluster.wait_state("proc:a", "freeze", 20)
    assert cluster.serving_node("proc:a") is None  # stopped by the reboot, not moved
    cluster.up("node2")
    cluster.wait_serving("proc:a", 30, on="node2")
    assert "reboot LRM, stop and freeze all services" in cluster.log("node2")


def test_migrate_policy_moves_services_away_before_shutdown(tmp_path: Path) -> None:
    c = LiveCluster(tmp_path, policy="migrate")
    try:
        start(c, {"proc:a": "node2", "proc:b": "node2"})
        c.stop("node2", kind="shutdown")
        for sid in ("proc:a", "proc:b"):
            c.wait_serving(sid, 30, not_on="node2")
        assert "shutdown LRM, doing maintenance, removing this node from active list" in c.log("node2")
        assert c.manager_status().node_status.get("node2") == "maintenance"
        assert c.overlaps() == []
    finally:
        c.close()


def test_migrate_and_relocate_commands(cluster: LiveCluster) -> None:
    start(cluster, {"proc:a": "node1"})
    cluster.manager("migrate", "proc:a", "node3")
    cluster.wait_serving("proc:a", 30, on="node3")
    cluster.wait_state("proc:a", "started", 10, node="node3")  # a move is refused mid-migration
    cluster.manager("relocate", "proc:a", "node2")
    cluster.wait_serving("proc:a", 30, on="node2")
    cluster.wait_state("proc:a", "started", 10, node="node2")
    assert [n for n, _ in cluster.copies("proc:a")] == ["node1", "node3", "node2"]


def test_start_failure_policy_retries_relocates_then_error(cluster: LiveCluster) -> None:
    cluster.up()
    cluster.add_service("proc:bad", "node1", "--max_restart", "1", "--max_relocate", "1", cmd="false")
    cluster.wait_state("proc:bad", "error", 60)
    logs = "".join(cluster.log(n) for n in cluster.nodes)
    assert "restart policy: retry number 1 for service 'proc:bad'" in logs
    assert "starting service proc:bad on node 'node1' failed, relocating service." in logs
    assert "recovery policy for service proc:bad failed, entering error state." in logs
    # error is left only through disabled (§5.8)
    res = cluster.manager("set", "proc:bad", "--state", "started", check=False)
    assert res.returncode == 4 and "in error state" in res.stderr
    cluster.manager("set", "proc:bad", "--state", "disabled")
    cluster.wait_state("proc:bad", "stopped", 20)


def test_services_added_and_removed_while_a_node_is_down(cluster: LiveCluster) -> None:
    start(cluster, {"proc:a": "node2", "proc:b": "node3"})
    cluster.kill("node2")
    recovered_on = cluster.wait_serving("proc:a", 30, not_on="node2")
    cluster.add_service("proc:new", "node2")  # placed on the dead node: recovered elsewhere
    cluster.wait_serving("proc:new", 30, not_on="node2")
    cluster.manager("remove", "proc:b")
    wait_for(lambda: "proc:b" not in cluster.manager_status().service_status, 15, "proc:b to be dropped")
    assert configured(cluster) == {"proc:a", "proc:new"}
    cluster.up("node2")
    wait_for(lambda: cluster.manager_status().node_status.get("node2") == "online", 30, "node2 back online")
    time.sleep(2)
    # no node priorities: a returning node does not pull services back (§5.9 step 8)
    assert cluster.serving_node("proc:a") == recovered_on


def test_network_partition_minority_fences_itself_majority_recovers(tmp_path: Path) -> None:
    c = LiveCluster(tmp_path, netns=True)
    try:
        start(c, {"proc:a": "node3", "proc:b": "node1"})
        t0 = time.monotonic()
        c.partition("node3")
        # the cut-off node sees no majority: it stops petting and its watchdog fires
        wait_for(lambda: "quorum lost" in c.log("node3"), 10, "node3 to lose quorum")
        wait_for(
            lambda: "FIRING" in (c.dir / "logs" / "node3.watchdog.log").read_text(),
            15,
            "node3's watchdog to fire",
        )
        c.wait_serving("proc:a", 30, not_on="node3")
        assert time.monotonic() - t0 < 20
        assert c.serving_node("proc:b") == "node1"  # the majority was never disturbed
        ms = c.manager_status()
        assert ms.master_node in ("node1", "node2")
        assert "quorum lost" not in c.log("node1") and "quorum lost" not in c.log("node2")
        # heal says what the fenced node needs next (issue #13)
        assert "its ha-node is not running (it fenced itself): start it with" in c.heal("node3")
        c.up("node3")
        wait_for(lambda: c.manager_status().node_status.get("node3") == "online", 30, "node3 to rejoin")
        assert c.overlaps() == []
    finally:
        c.close()


def test_ocf_dummy_resource_fails_over(cluster: LiveCluster) -> None:
    """A real OCF agent (Debian's resource-agents, ocf:heartbeat:Dummy) under HA."""
    cluster.up()
    cluster.manager("add", "ocf:dummy", "--node", "node2", "--agent", "heartbeat:Dummy")
    cluster.wait_state("ocf:dummy", "started", 30, node="node2")
    wait_for(lambda: "service status ocf:dummy started" in cluster.log("node2"), 10, "the agent's start")
    state_files = list((cluster.dir / "state" / "node2").rglob("*.state"))
    assert state_files, "Dummy keeps its state file in the node's HA_RSCTMP"
    cluster.kill("node2")
    wait_for(
        lambda: cluster.service_state("ocf:dummy")[1] not in (None, "node2"), 30, "recovery of ocf:dummy"
    )
    cluster.wait_state("ocf:dummy", "started", 30)
    new_node = cluster.service_state("ocf:dummy")[1]
    assert new_node is not None
    wait_for(
        lambda: "service status ocf:dummy started" in cluster.log(new_node),
        15,
        "the agent's start on the new node",
    )
    assert list((cluster.dir / "state" / new_node).rglob("*.state"))


@pytest.mark.parametrize(
    ("policy", "kind", "outcome"),
    [
        ("freeze", "shutdown", "frozen"),
        ("freeze", "reboot", "frozen"),
        ("failover", "shutdown", "moved"),
        ("failover", "reboot", "moved"),
        ("migrate", "reboot", "moved and back"),
    ],
)
def test_shutdown_policies(tmp_path: Path, policy: str, kind: str, outcome: str) -> None:
    """BEHAVIOUR.md §3.2.5 (conditional and migrate-shutdown have their own tests above)."""
    c = LiveCluster(tmp_path, policy=policy)
    try:
        start(c, {"proc:a": "node2"})
        c.stop("node2", kind=kind)
        log = c.log("node2")
        assert f"got shutdown request with shutdown policy '{policy}'" in log
        if outcome == "frozen":
            assert f"{kind} LRM, stop and freeze all services" in log
            c.wait_state("proc:a", "freeze", 20)
            assert c.serving_node("proc:a") is None  # stopped, and not moved while frozen
            time.sleep(2)
            assert c.service_state("proc:a") == ("freeze", "node2")
            c.up("node2")
            c.wait_serving("proc:a", 30, on="node2")
        elif outcome == "moved":
            assert "shutdown LRM, stop all services" in log  # literal "shutdown" also for reboots
            c.wait_serving("proc:a", 30, not_on="node2")
        else:
            assert f"{kind} LRM, doing maintenance, removing this node from active list" in log
            c.wait_serving("proc:a", 30, not_on="node2")
            c.up("node2")
            # the maintenance fallback brings it home once the node is back (§6.5)
            c.wait_serving("proc:a", 40, on="node2")
        assert c.overlaps() == []
    finally:
        c.close()
