"""Day-2 operations on a live 3-node cluster: /metrics on every node, fence and recovery notifications."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.livecluster import LiveCluster, wait_for
from tests.listeners import Webhook

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(host: str, port: int) -> Samples:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=2) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def hooked(tmp_path: Path) -> Iterator[tuple[LiveCluster, Webhook]]:
    hook = Webhook()
    c = LiveCluster(tmp_path)
    try:
        conf = json.loads((c.dir / "cluster.json").read_text())
        conf["notify"] = {"webhook": hook.url, "timeout": 2}
        (c.dir / "cluster.json").write_text(json.dumps(conf))
        yield c, hook
        assert c.overlaps() == [], "a service ran on two nodes at once"
    finally:
        c.close()
        hook.close()


def test_metrics_on_every_node_and_fence_notifications(hooked: tuple[LiveCluster, Webhook]) -> None:
    c, hook = hooked
    cfg = c.config()
    where = {n: cfg.metrics_address(n) for n in c.nodes}
    assert all(w is not None for w in where.values()), "ha-cluster init gives every node a metrics port"
    c.add_service("proc:a", "node2")
    c.add_service("proc:b", "node3")
    c.up()
    c.wait_serving("proc:a", 30, on="node2")
    c.wait_serving("proc:b", 30, on="node3")

    def all_nodes() -> dict[str, Samples]:
        return {n: scrape(*w) for n, w in where.items() if w is not None}

    def settled() -> dict[str, Samples] | None:
        got = all_nodes()
        ok = all(
            value(s, "pyha_quorate") == 1
            and value(s, "pyha_bus_peers_up") == 2
            and value(s, "pyha_cluster_members") == 3
            and value(s, "pyha_services", state="started") == 2
            for s in got.values()
        )
        masters = [s for s in got.values() if value(s, "pyha_is_master") == 1]
        # the master's first round (the one that made it master) is not timed: wait for the next
        timed = len(masters) == 1 and value(masters[0], "pyha_manager_round_seconds_count") > 0
        return got if ok and timed else None

    got = wait_for(settled, 15, "every node's metrics: quorate, 2 peers, 2 services started, one master")
    assert isinstance(got, dict)
    master = next(n for n, s in got.items() if value(s, "pyha_is_master") == 1)
    assert value(got["node2"], "pyha_node_services", state="started") == 1
    assert value(got[master], "pyha_manager_round_seconds_count") > 0
    assert value(got[master], "pyha_lease_renewal_seconds_count", lease="manager", result="ok") > 0
    assert value(got["node1"], "pyha_store_request_seconds_count", op="read") > 0

    victim = "node2" if master != "node2" else "node3"
    sid = "proc:a" if victim == "node2" else "proc:b"
    c.kill(victim)
    c.wait_serving(sid, 30, not_on=victim)

    def events() -> list[str] | None:
        kinds = [b["event"] for b in hook.bodies if b.get("node") == victim]
        return kinds if {"fence", "fenced", "recovery"} <= set(kinds) else None

    wait_for(events, 10, f"the fence, fenced and recovery notifications for {victim}")
    recovery = next(b for b in hook.bodies if b["event"] == "recovery")
    assert (recovery["sid"], recovery["cluster"], recovery["reporter"]) == (sid, cfg.cluster, master)
    assert recovery["to_node"] != victim
    assert 0 < recovery["failover_seconds"] < 30
    after = scrape(*where[master])  # type: ignore[misc]
    assert value(after, "pyha_fences_total", node=victim) >= 1
    assert value(after, "pyha_recoveries_total", from_node=victim) >= 1
    assert value(after, "pyha_failover_seconds_count") >= 1
    assert value(after, "pyha_bus_peer_up", peer=victim) == 0
    assert value(after, "pyha_notifications_total", target="webhook", result="sent") >= 3
