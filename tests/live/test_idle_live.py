"""A live cluster at rest writes (almost) nothing to its store (issue #17).

Counted from the dir store's change journal, which gets one line per record
write: lease renewals are not records and not in it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from actors.env import STATUS_REFRESH
from bench.idle import JournalCounter
from bench.livecluster import LiveCluster

pytestmark = pytest.mark.timeout(180)

WINDOW = 15.0


def test_at_rest_only_bounded_status_refreshes_are_written(cluster: LiveCluster, tmp_path: Path) -> None:
    recheck = float(cluster.config().recheck_interval)
    placement = {"proc:a": "node1", "proc:b": "node2", "proc:c": "node3", "proc:d": "node1"}
    for sid, node in placement.items():
        cluster.add_service(sid, node)
    cluster.up()
    for sid, node in placement.items():
        cluster.wait_serving(sid, 30, on=node)
    for sid in placement:
        cluster.wait_state(sid, "started")
    time.sleep(3)  # the first re-checks after the starts settle
    journal = JournalCounter(cluster.dir / "store" / ".pyha" / "journal")
    t0 = time.monotonic()
    while time.monotonic() - t0 < WINDOW:
        time.sleep(0.5)
        journal.poll()
    counts = journal.counts
    lrm = {n: counts.get(f"nodes/{n}/lrm_status", 0) for n in cluster.nodes}
    # only the two status records, and only at re-check rounds or timestamp refreshes
    assert set(counts) <= {"manager_status"} | {f"nodes/{n}/lrm_status" for n in cluster.nodes}, counts
    per_node = int(WINDOW // min(recheck, STATUS_REFRESH)) + 1
    assert all(1 <= k <= per_node for k in lrm.values()), (lrm, per_node)  # refreshed, but bounded
    # the master writes when a node's re-check results arrive, or to refresh its timestamp
    assert 1 <= counts.get("manager_status", 0) <= per_node * len(cluster.nodes), counts
    # and the services were checked all along: still answering where they were
    for sid, node in placement.items():
        assert cluster.serving_node(sid) == node
