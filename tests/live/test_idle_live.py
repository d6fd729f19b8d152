"""A live cluster at rest writes nothing to its store but lease renewals (issue #17).

Counted from the dir store's change journal, which gets one line per record
write: lease renewals are not records and not in it. The services are still
checked every re-check interval: one that dies at rest is started again
without a single record write (a successful re-check is not published, see
actors/lrm.py ``PacedLRM``), and `ha-manager status` still calls every daemon
alive although no record was rewritten for more than the reference's 30 s
(admin/liveness.py).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from bench.idle import JournalCounter
from bench.livecluster import LiveCluster, wait_for
from tests.live.test_operations import scrape, value

pytestmark = pytest.mark.timeout(240)

WINDOW = 30.0  # the window: longer than the reference's 30 s "dead?" mark


def settle(journal: JournalCounter, quiet: float, timeout: float) -> None:
    """Wait until the journal got no line for ``quiet`` seconds (the first re-check rounds done)."""
    t0 = last = time.monotonic()
    seen = 0
    while time.monotonic() - last < quiet:
        assert time.monotonic() - t0 < timeout, f"still writing after {timeout:g}s: {journal.counts}"
        time.sleep(0.5)
        journal.poll()
        n = sum(journal.counts.values())
        if n != seen:
            seen, last = n, time.monotonic()


def test_at_rest_nothing_is_written_and_services_are_still_checked(cluster: LiveCluster) -> None:
    recheck = float(cluster.config().recheck_interval)
    placement = {"proc:a": "node1", "proc:b": "node2", "proc:c": "node3", "proc:d": "node1"}
    for sid, node in placement.items():
        cluster.add_service(sid, node)
    cluster.up()
    for sid, node in placement.items():
        cluster.wait_serving(sid, 30, on=node)
    for sid in placement:
        cluster.wait_state(sid, "started")
    journal = JournalCounter(cluster.dir / "store" / ".pyha" / "journal")
    settle(journal, quiet=recheck + 3, timeout=4 * recheck + 20)

    journal = JournalCounter(cluster.dir / "store" / ".pyha" / "journal")
    master = cluster.manager_status().master_node
    assert master is not None
    at = cluster.config().metrics_address(master)
    rounds0 = value(scrape(*at), "pyha_manager_round_seconds_count")
    t0 = time.monotonic()
    copies = cluster.copies("proc:b")
    assert len(copies) == 1, copies
    os.kill(copies[0][1], signal.SIGKILL)  # the service dies behind the LRM's back
    wait_for(
        lambda: [c for c in cluster.copies("proc:b") if c != copies[0]],
        recheck + 15,
        "proc:b started again by its node's re-check",
    )
    cluster.wait_serving("proc:b", 10, on="node2")
    while time.monotonic() - t0 < WINDOW:
        time.sleep(0.5)
        journal.poll()
    assert journal.counts == {}, journal.counts  # not one record write in the window
    # nothing changed, so the master skipped its rounds (actors/quiet_rounds.py): a full one
    # at least every 5 s, not one per 0.5 s tick (60 in the window)
    if cluster.manager_status().master_node == master:
        rounds = value(scrape(*at), "pyha_manager_round_seconds_count") - rounds0
        assert 0 < rounds < WINDOW, rounds

    # nothing rewritten for WINDOW s, yet every daemon is shown alive, from leases and the bus
    out = cluster.manager("status").stdout
    assert "dead?" not in out, out
    assert "master node" in out and "(active, " in out, out
    for node in cluster.nodes:
        assert f"lrm {node} (active, watchdog active" in out, out
    for sid, node in placement.items():
        assert cluster.serving_node(sid) == node
    assert not cluster.overlaps()
