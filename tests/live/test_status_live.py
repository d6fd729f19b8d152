"""Status tells the truth at once (issue #13): a killed node does not look fine for 30 s."""

from __future__ import annotations

import pytest

from bench.livecluster import LiveCluster, wait_for

pytestmark = pytest.mark.timeout(120)


def lrm_line(cluster: LiveCluster, node: str) -> str:
    out = cluster.manager("status").stdout
    return next(line for line in out.splitlines() if line.startswith(f"lrm {node} "))


def test_a_killed_node_shows_as_lost_within_seconds(cluster: LiveCluster) -> None:
    cluster.add_service("proc:a", "node3")
    cluster.up()
    cluster.wait_serving("proc:a", 30, on="node3")
    assert "(active, watchdog active," in lrm_line(cluster, "node3")
    cluster.kill("node3")
    # the reference's rule alone (an LRM status counts as current for 30 s) would take 30 s
    wait_for(lambda: "dead?" in lrm_line(cluster, "node3"), 15, "status to show node3 lost")
    assert lrm_line(cluster, "node3").startswith("lrm node3 (node ")
