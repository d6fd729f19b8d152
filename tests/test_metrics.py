"""A node's metrics (actors/metrics.py); what the master's LiveEnv counts and reports (actors/observe.py)."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from actors.env import LiveEnv
from actors.metrics import SERVER_POLL, NodeMetrics, TimedStore
from admin.cluster import ClusterConfig, NotifyConfig
from admin.ports import free_port
from cli.cluster_init import plan
from ha.records import ManagerStatus, ServiceData
from store.dirstore import DirStore
from tests.envstubs import context


class Events:
    """Stands in for the Notifier: records what the master submits."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str, dict[str, Any]]] = []

    def submit(self, event: str, subject: str, **fields: Any) -> bool:
        self.got.append((event, subject, fields))
        return True


def sample(m: NodeMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def status(nodes: dict[str, str], services: dict[str, tuple[str, str]]) -> ManagerStatus:
    return ManagerStatus(
        master_node="n1",
        node_status=dict(nodes),
        service_status={sid: ServiceData(state=s, node=n) for sid, (s, n) in services.items()},
    )


def test_scrape_over_http_reads_runtime_and_status() -> None:
    m = NodeMetrics("n1", "c1")
    m.watch_runtime(
        quorate=lambda: True,
        bus_quorate=lambda: True,
        store_healthy=lambda: False,
        peers_up=lambda: {"n3"},
        members=["n1", "n2", "n3"],
        bus_stats=lambda: {"sent": 40, "received": 38, "rejected.bad_payload": 1},
    )
    m.saw_manager_status(
        status(
            {"n1": "online", "n2": "fence", "n3": "online"}, {"a": ("started", "n1"), "b": ("fence", "n2")}
        )
    )
    port = free_port()
    m.serve("127.0.0.1", port)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        t0 = time.monotonic()
        m.close()
        # the server's loop wakes every SERVER_POLL (30) s on its own: close() wakes it at once
        assert time.monotonic() - t0 < SERVER_POLL / 3
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert got[("pyha_quorate", ())] == 1
    assert got[("pyha_store_healthy", ())] == 0
    assert got[("pyha_bus_peers_up", ())] == 1
    assert got[("pyha_cluster_members", ())] == 3
    assert ("pyha_bus_peer_up", (("peer", "n1"),)) not in got  # only the other members
    assert got[("pyha_bus_peer_up", (("peer", "n2"),))] == 0
    assert got[("pyha_services", (("state", "started"),))] == 1
    assert got[("pyha_services", (("state", "fence"),))] == 1
    assert got[("pyha_node_services", (("state", "started"),))] == 1
    assert got[("pyha_node_services", (("state", "fence"),))] == 0
    assert got[("pyha_node_state", (("node", "n2"), ("state", "fence")))] == 1
    assert got[("pyha_node_info", (("cluster", "c1"), ("node", "n1")))] == 1
    assert got[("pyha_bus_frames_total", (("direction", "sent"),))] == 40  # bench idle's bus messages
    assert got[("pyha_bus_frames_total", (("direction", "received"),))] == 38


def test_timed_store_counts_calls_and_errors(tmp_path: Path) -> None:
    m = NodeMetrics("n1")
    st = TimedStore(DirStore(tmp_path / "s"), m)
    st.write("a", b"1")
    assert st.read("a") is not None
    st.read("a")
    assert st.acquire_lease("agent_lock.n1", "n1#x", 5.0)
    assert sample(m, "pyha_store_request_seconds_count", op="read") == 2
    assert sample(m, "pyha_store_request_seconds_count", op="write") == 1
    assert sample(m, "pyha_store_request_seconds_count", op="acquire_lease") == 1
    st.close()


def test_master_counts_and_reports_fence_recovery_error_and_migration(tmp_path: Path) -> None:
    store = DirStore(tmp_path / "s")
    ctx = context(store)
    m = NodeMetrics("n1")
    events = Events()
    ctx.metrics, ctx.notifier = m, events  # type: ignore[assignment]
    ctx.last_seen["n2"] = time.time() - 4.0  # the bus last heard n2 four seconds ago
    env = LiveEnv(ctx, "crm")
    assert env.get_ha_manager_lock()
    assert sample(m, "pyha_lease_renewal_seconds_count", lease="manager", result="ok") == 1
    nodes = {"n1": "online", "n2": "online", "n3": "online"}
    services = {"a": ("started", "n2"), "b": ("started", "n1"), "c": ("started", "n3")}
    env.read_manager_status()  # the baseline: an empty record, nothing to report
    env.write_manager_status(status(nodes, services))
    assert events.got == []  # a baseline of nothing, then services already started: no event

    # the core marks n2 fence and tells (ha/node_status.py), then writes
    env.send_notification("FENCE", "Try to fence node 'n2'", "n2")
    env.write_manager_status(status({**nodes, "n2": "fence"}, {**services, "a": ("fence", "n2")}))
    env.send_notification("SUCCEED", "fencing: acknowledged - got agent lock for node 'n2'", "n2")
    env.write_manager_status(
        status(
            {**nodes, "n2": "unknown"},
            {**services, "a": ("started", "n3"), "b": ("error", "n1"), "c": ("migrate", "n3")},
        )
    )
    kinds = [e for e, _, _ in events.got]
    assert kinds == ["fence", "fenced", "recovery", "error"]
    fence, fenced, recovery, error = (f for _, _, f in events.got)
    assert fence["node"] == fenced["node"] == "n2"
    assert events.got[0][1] == "FENCE: Try to fence node 'n2'"
    assert (recovery["sid"], recovery["node"], recovery["to_node"]) == ("a", "n2", "n3")
    assert 4.0 <= recovery["failover_seconds"] < 10.0  # from when the bus last heard n2
    assert (error["sid"], error["previous_state"]) == ("b", "started")
    assert sample(m, "pyha_fence_attempts_total", node="n2") == 1
    assert sample(m, "pyha_fences_total", node="n2") == 1
    assert sample(m, "pyha_recoveries_total", from_node="n2") == 1
    assert sample(m, "pyha_service_errors_total") == 1
    assert sample(m, "pyha_migrations_total", kind="migrate") == 1
    assert sample(m, "pyha_failover_seconds_count") == 1
    store.close()


def test_a_new_master_reports_only_what_changes_under_it(tmp_path: Path) -> None:
    store = DirStore(tmp_path / "s")
    old = LiveEnv(context(store, holder="n1#old"), "crm")
    assert old.get_ha_manager_lock()
    old.read_manager_status()
    old.write_manager_status(status({"n1": "online"}, {"x": ("error", "n1")}))
    old.release_ha_manager_lock()
    ctx = context(store, node="n2", holder="n2#new")
    events = Events()
    ctx.metrics, ctx.notifier = NodeMetrics("n2"), events  # type: ignore[assignment]
    new = LiveEnv(ctx, "crm")
    new.read_manager_status()  # as a slave: no baseline yet
    assert new.get_ha_manager_lock()
    new.read_manager_status()
    new.write_manager_status(status({"n1": "online"}, {"x": ("error", "n1"), "y": ("error", "n1")}))
    assert [(e, f["sid"]) for e, _, f in events.got] == [("error", "y")]  # x was in error before
    store.close()


def test_cluster_json_keeps_metrics_ports_and_notify(tmp_path: Path) -> None:
    p = plan(
        str(tmp_path / "c"), count=3, base_port=None, curve=False, name="c1", timing_kv=(), cgroups=False,
        watchdog="userspace", force=False, netns=False, store_kind="dir", endpoints=None, store_timeout=1.0,
    )  # fmt: skip
    assert sorted(p.metrics_ports) == ["node1", "node2", "node3"]
    bus_ports = {int(e.rsplit(":", 1)[1]) for e in p.endpoints.values()}
    assert not bus_ports & set(p.metrics_ports.values())  # no port handed out twice
    c = ClusterConfig(
        root=tmp_path / "c", cluster="c1", nodes=p.endpoints, curve=False,
        metrics_ports=dict(p.metrics_ports),
        notify=NotifyConfig(webhook="http://127.0.0.1:9/x", events=("fence",)),
    )  # fmt: skip
    c.save()
    back = ClusterConfig.load(tmp_path / "c")
    assert back.metrics_ports == p.metrics_ports
    assert back.metrics_address("node2") == ("127.0.0.1", p.metrics_ports["node2"])
    assert back.notify == c.notify
