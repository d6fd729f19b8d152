"""A config mistake never costs a running service (issue #10), on a real cluster."""

from __future__ import annotations

import time

import pytest

from admin.timing import LeaseTiming
from bench.livecluster import LiveCluster, wait_for
from store import records as rec

pytestmark = pytest.mark.timeout(180)


def test_a_non_utf8_byte_in_resources_cfg_fences_nothing(cluster: LiveCluster) -> None:
    cluster.add_service("proc:a", "node1")
    cluster.add_service("proc:b", "node2")
    cluster.up()
    cluster.wait_serving("proc:a", 30, on="node1")
    cluster.wait_serving("proc:b", 30, on="node2")
    pids = {n: cluster.pid(n) for n in ("node1", "node2", "node3")}
    store = cluster.open_store()
    record = store.read(rec.RESOURCES_CFG)
    assert record is not None
    good = record.data
    store.write(rec.RESOURCES_CFG, good + b"\n# caf\xe9\nproc: c\xff\n\tcmd sleep 1\n\tnode node3\n")
    # the master reports it (so it read the bad file), then several CRM rounds with the bad file in
    # place (the old code failed 5 rounds in a row, then fenced; a round is a lease renewal interval:
    # manager_status itself is only rewritten on a change or every 10 s, so it cannot count them)
    wait_for(lambda: rec.RESOURCES_CFG in rec.read_config_errors(store), 20, "the master to record the error")
    time.sleep(10 * LeaseTiming().renew_interval)  # the cluster's default timing
    assert {n: cluster.pid(n) for n in pids} == pids, "no ha-node restarted or fenced"
    # the tools show it in one line
    status = cluster.manager("status").stdout
    assert "config resources.cfg invalid since" in status and "not valid UTF-8" in status
    assert "Traceback" not in status
    listing = cluster.manager("config", check=False)
    assert "Traceback" not in listing.stdout + listing.stderr
    assert cluster.serving_node("proc:a") == "node1" and cluster.serving_node("proc:b") == "node2"
    logs = "".join(cluster.log(n) for n in pids)
    assert "fencing this node" not in logs and "not valid UTF-8" in logs
    # fixed: the report goes away
    store.write(rec.RESOURCES_CFG, good)
    wait_for(lambda: rec.RESOURCES_CFG not in rec.read_config_errors(store), 20, "the error report to clear")
    assert "config resources.cfg" not in cluster.manager("status").stdout
    store.close()


def test_an_edit_of_a_non_utf8_file_is_refused_in_one_line(cluster: LiveCluster) -> None:
    cluster.up()
    store = cluster.open_store()
    store.write(rec.RESOURCES_CFG, b"proc: x\n\tcmd sleep \xff\n\tnode node1\n")
    res = cluster.manager("add", "proc:y", "--node", "node2", "--cmd", "sleep 9", check=False)
    assert res.returncode == 4, res.stderr
    assert res.stderr.strip().count("\n") == 0 and "resources.cfg:2" in res.stderr
    record = store.read(rec.RESOURCES_CFG)
    assert record is not None and record.data == b"proc: x\n\tcmd sleep \xff\n\tnode node1\n"
    store.close()
