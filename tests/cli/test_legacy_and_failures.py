"""A cluster in a special shape: legacy HA groups, one node never started, then quorum lost.

node3 stays down, so the CRM cannot migrate the groups to rules (every node
must be online for that, BEHAVIOUR.md §5.14) and the group commands work;
the client's failover skips node3; stopping the master leaves the last
node without quorum, and writes are refused there. At the end the cluster
is down and ``ha-manager`` works on its store directly.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from store.dirstore import DirStore
from tests.cli.conftest import Cluster, wait_for
from tests.cli.test_commands import one_line_error

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def legacy() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="pyha-cli-legacy-"))
    c = None
    try:
        c = Cluster(root)
        store = DirStore(c.dir / "store")
        try:
            store.write("groups.cfg", b"group: prefer1\n\tnodes node1:2,node2\n\tnofailback 1\n\n")
            # node3 is known from before (it died): the migration waits for it to be online
            store.write("manager_status", b'{"node_status": {"node3": "unknown"}, "service_status": {}}')
        finally:
            store.close()
        # stopped services only: no LRM holds an armed watchdog when quorum goes away later
        c.hm(
            "add",
            "proc:g1",
            "--node",
            "node1",
            "--cmd",
            "sleep 600",
            "--state",
            "stopped",
            "--group",
            "prefer1",
        )
        c.up("node1", "node2")
        c.wait_ready(["node1", "node2"])
        yield c
    finally:
        if c is not None:
            c.close()
        shutil.rmtree(root, ignore_errors=True)


def test_group_commands_while_groups_exist(legacy: Cluster) -> None:
    assert legacy.hm("groupconfig").stdout == "group: prefer1\n\tnodes node1:2,node2\n\tnofailback 1\n\n"
    legacy.hm("groupadd", "pair", "--nodes", "node1,node2", "--restricted", "1", "--comment", "the two")
    legacy.hm("groupset", "pair", "--nodes", "node2:5,node1", "--delete", "comment")
    groups = {g["group"]: g for g in legacy.json("groupconfig")["groups"]}
    assert groups["pair"] == {"group": "pair", "type": "group", "nodes": "node1,node2:5", "restricted": 1,
                              "nofailback": 0}  # fmt: skip
    digest = legacy.json("groupconfig")["digest"]
    legacy.hm("groupset", "pair", "--nofailback", "1", "--digest", digest)
    one_line_error(legacy.hm("groupset", "pair", "--nofailback", "0", "--digest", digest, code=5), "digest")
    legacy.hm(
        "add", "proc:g2", "--node", "node2", "--cmd", "sleep 600", "--state", "stopped", "--group", "pair"
    )
    one_line_error(legacy.hm("groupremove", "pair", code=4), "used by resource 'proc:g2'")
    one_line_error(legacy.hm("groupadd", "pair", "--nodes", "node1", code=4), "already defined")
    one_line_error(legacy.hm("groupadd", "far", "--nodes", "node9", code=3), "unknown node 'node9'")
    one_line_error(legacy.hm("groupadd", "nonodes", code=2), "Missing option '--nodes'")
    one_line_error(legacy.hm("groupset", "ghost", "--comment", "x", code=3), "no such group 'ghost'")
    one_line_error(legacy.hm("set", "proc:g2", "--group", "ghost", code=3), "group 'ghost' does not exist")
    legacy.hm("set", "proc:g2", "--delete", "group")
    legacy.hm("groupremove", "pair")
    assert [g["group"] for g in legacy.json("groupconfig")["groups"]] == ["prefer1"]
    # rules beside groups, but not a node-affinity rule for a resource in a group
    one_line_error(
        legacy.hm(
            "rules", "add", "node-affinity", "r1", "--resources", "proc:g1", "--nodes", "node1", code=4
        ),
        "in group 'prefer1'",
    )
    conf = legacy.hm("config").stdout
    assert "proc:g1\n" in conf and "\tgroup prefer1\n" in conf


def test_failover_skips_a_node_that_does_not_answer(legacy: Cluster) -> None:
    t0 = time.monotonic()
    st = legacy.json("--node", "node3", "--timeout", "2", "status")
    assert st["node"] in ("node1", "node2") and time.monotonic() - t0 < 8
    assert "lrm node3 (unable to read lrm status)" in [ln["text"] for ln in st["lines"]]
    # a write too: node3 was never connected, so it certainly did not run there
    legacy.hm("--node", "node3", "set", "proc:g1", "--comment", "via failover")
    assert legacy.json("config")["resources"][0]["comment"] == "via failover"


def test_no_quorum_refuses_writes(legacy: Cluster) -> None:
    st = legacy.status()
    master = st["master"]
    other = "node2" if master == "node1" else "node1"
    legacy.run("cli.ha_cluster", "stop", str(legacy.dir), master, "--timeout", "30")
    wait_for(lambda: not legacy.json("--node", other, "status")["quorate"], 15, f"{other} to lose quorum")
    out = legacy.hm("--node", other, "status").stdout.splitlines()
    assert out[0] == f"quorum No quorum on node '{other}'!"
    before = legacy.digest()
    try:
        err = legacy.hm("--node", other, "set", "proc:g1", "--state", "started", code=6)
        one_line_error(err, "no quorum")
        one_line_error(legacy.hm("--node", other, "crm-command", "arm-ha", code=6), "no quorum")
    except AssertionError:
        for n in legacy.nodes:  # what the nodes saw, for the failure report
            log = legacy.dir / "logs" / f"{n}.log"
            print(f"--- {n}\n" + ("\n".join(log.read_text().splitlines()[-25:]) if log.exists() else "-"))
        raise
    assert legacy.digest() == before


def test_offline_when_the_cluster_is_down(legacy: Cluster) -> None:
    legacy.run("cli.ha_cluster", "down", str(legacy.dir), "--timeout", "30")
    legacy.hm("add", "proc:offline", "--node", "node2", "--cmd", "sleep 600", "--state", "stopped")
    assert "proc:offline" in {r["sid"] for r in legacy.json("config")["resources"]}
    out = legacy.hm("status").stdout.splitlines()
    assert out[0] == "quorum none: no node of this cluster runs (ha-cluster up starts them)"
    assert "service proc:offline (not running; stale, last known: node2, queued)" in out, out
    one_line_error(legacy.hm("add", "proc:offline", "--node", "node9", "--cmd", "x", code=3), "unknown node")
    one_line_error(legacy.hm("status", "--watch", code=6), "needs a running cluster")
    # rules.cfg is empty: the one rule listed is the one the master makes of the group in use
    rows = json.loads(legacy.hm("--offline", "rules", "list", "--output-format", "json").stdout)
    assert [(r["rule"], r["group"]) for r in rows] == [("ha-group-prefer1", "prefer1")]
