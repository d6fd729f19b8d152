"""The ``dynamic`` scheduler on a live cluster (issue #14): measured load drives auto-rebalancing.

Three services that each keep about a third of a core busy all run on node1;
with ``crs: ha=dynamic,ha-auto-rebalance=1`` the master, on what the nodes'
LRMs measured in their cgroups, moves them until the imbalance is under the
threshold: one per node. The ``cluster`` fixture checks, from the services'
own markers, that none ever ran on two nodes at once.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from actors.env import LiveEnv, NodeContext
from admin.ports import free_port
from bench.livecluster import PY, LiveCluster, wait_for
from ha.crs.usage import LoadUsage
from ha.errors import HaError
from ha.states import ServiceState
from tests.envstubs import NoWatchdog, Quorate

pytestmark = pytest.mark.timeout(150)

SIDS = ("proc:a", "proc:b", "proc:c")
THRESHOLD = 0.3
# a third of a core each: busy 30 ms of every 90 ms (three of them fit twice on 2 cores)
BURN = """import sys, time
busy = float(sys.argv[1])
while True:
    end = time.monotonic() + busy
    while time.monotonic() < end:
        pass
    time.sleep(0.06)
"""
DC_BASE = "ha: shutdown_policy=conditional\ncrs: ha=dynamic"
# hold 4 rounds of 0.5 s; threshold and margin are the defaults (fractions, BEHAVIOUR.md §5.12)
DC_REBALANCE = (
    f",ha-auto-rebalance=1,ha-auto-rebalance-hold-duration=4,ha-auto-rebalance-threshold={THRESHOLD}"
)


def write_datacenter(c: LiveCluster, text: str) -> None:
    store = c.open_store()
    try:
        store.write("datacenter.cfg", (text + "\n").encode())
    finally:
        store.close()


def add_burner(c: LiveCluster, sid: str, script: Path) -> None:
    port = free_port()
    c.ports[sid] = port
    demo = f"{PY} -m agents.demo_service --port {port} --bind 127.0.0.1 --markers {c.markers}"
    cmd = f"{PY} {script} 0.03 & exec {demo}"  # the burner shares the service's cgroup
    c.manager("add", sid, "--node", "node1", "--cmd", cmd, "--check-tcp", f"127.0.0.1:{port}")


def imbalance(c: LiveCluster) -> float:
    """The imbalance the master computes, from the same records (the measured ``dynamic`` stats)."""
    store = c.open_store()
    try:
        ctx = NodeContext(
            node="node1", nodes=list(c.nodes), store=store, membership=Quorate(), watchdog=NoWatchdog(),
            plugins={}, lease_ttl=5.0,
        )  # fmt: skip
        env = LiveEnv(ctx, "lrm")  # reads only
        for n in c.nodes:
            env.read_lrm_status(n)
        load = LoadUsage("dynamic", env.get_node_stats("dynamic"), env.get_service_stats("dynamic"), env.log)
        for n in c.nodes:
            load.add_node(n)
        return load.imbalance()
    except HaError:
        return -1.0  # not every node has measured its usage yet (the master falls back to basic)
    finally:
        store.close()


def test_auto_rebalancing_spreads_measured_load(cluster: LiveCluster, tmp_path: Path) -> None:
    script = tmp_path / "burn.py"
    script.write_text(BURN)
    write_datacenter(cluster, DC_BASE)
    for sid in SIDS:
        add_burner(cluster, sid, script)
    cluster.up()
    for sid in SIDS:
        cluster.wait_serving(sid, 30, on="node1")
        cluster.wait_state(sid, ServiceState.STARTED, node="node1")
    # the nodes measure node1 busy: far over the threshold, but nothing moves without rebalancing
    busy = float(wait_for(lambda: (v := imbalance(cluster)) > 2 * THRESHOLD and v, 20, "node1 measured busy"))
    assert all(cluster.serving_node(sid) == "node1" for sid in SIDS)

    write_datacenter(cluster, DC_BASE + DC_REBALANCE)
    t0 = time.monotonic()

    def spread() -> bool:
        where = {sid: cluster.serving_node(sid) for sid in SIDS}
        states = {sid: cluster.service_state(sid) for sid in SIDS}
        return len(set(where.values())) == 3 and all(
            st == (ServiceState.STARTED, where[sid]) for sid, st in states.items()
        )

    wait_for(spread, 40, "one burner per node", step=0.2)
    took = time.monotonic() - t0
    logs = "".join(cluster.log(n) for n in cluster.nodes)
    moves = re.findall(r"auto rebalance - relocate (proc:\w) to (node\d)", logs)
    assert len(moves) >= 2, moves
    # the imbalance the master sees now is under the threshold (measured again on the new nodes)
    wait_for(lambda: 0 <= imbalance(cluster) < THRESHOLD, 15, f"imbalance under {THRESHOLD} (was {busy:.2f})")
    # and it stays spread: no further moves once balanced
    time.sleep(4)
    logs = "".join(cluster.log(n) for n in cluster.nodes)
    again = re.findall(r"auto rebalance - relocate .*", logs)
    assert len(again) == len(moves), again
    assert took < 40
