"""``ha-manager status`` lines (BEHAVIOUR.md §8), from records."""

from __future__ import annotations

import time

from ha.config.resources import ResourceConfig, ServiceConfig
from ha.records import LrmStatus, ManagerStatus, ServiceData
from ha.status import perl_pretty_json, service_verbose_state, status_lines

NOW = 1_767_225_600.0  # Thu Jan  1 00:00:00 2026 UTC


def fmt(ts: float) -> str:
    return time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(ts))


def conf(**states: tuple[str, str]) -> ServiceConfig:
    c = ServiceConfig()
    for key, (node, state) in states.items():
        sid = key.replace("_", ":")
        t, n = sid.split(":")
        c.services[sid] = ResourceConfig(sid=sid, type=t, name=n, node=node, state=state)
    return c


def lines(**kw) -> list[str]:  # type: ignore[no-untyped-def]
    args = {"node": "node1", "quorate": True, "now": NOW, "fmt_time": fmt, "lrm": {}} | kw
    return [ln.text() for ln in status_lines(**args)]


def test_full_status_of_a_healthy_cluster() -> None:
    ms = ManagerStatus(
        master_node="node1",
        timestamp=NOW - 5,
        node_status={"node1": "online", "node2": "online"},
        service_status={
            "vm:100": ServiceData("started", "node1", "u1", running=True),
            "vm:101": ServiceData("started", "node2", "u2"),
        },
    )
    lrm = {
        "node1": LrmStatus("active", "active", NOW - 3),
        "node2": LrmStatus("wait_for_agent_lock", "active", NOW - 1),
    }
    c = conf(vm_100=("node1", "started"), vm_101=("node2", "started"), vm_102=("node2", "started"))
    assert lines(ms=ms, lrm=lrm, conf=c) == [
        "quorum OK",
        "master node1 (active, Wed Dec 31 23:59:55 2025)",
        "fencing armed (CRM watchdog active)",
        "lrm node1 (active, watchdog active, Wed Dec 31 23:59:57 2025)",
        "lrm node2 (wait_for_agent_lock, watchdog standby, Wed Dec 31 23:59:59 2025)",
        "service vm:100 (node1, started)",
        "service vm:101 (node2, starting)",
        "service vm:102 (node2, queued)",
    ]


def test_stale_master_drift_idle_and_no_quorum() -> None:
    ms = ManagerStatus(master_node="node2", timestamp=NOW - 31)
    assert (
        lines(ms=ms, conf=conf(vm_100=("node1", "started")))[1]
        == "master node2 (old timestamp - dead?, Wed Dec 31 23:59:29 2025)"
    )
    assert lines(ms=ms, conf=ServiceConfig())[1].startswith("master node2 (idle, ")
    ms.timestamp = NOW + 3
    assert "detected time drift!" in lines(ms=ms, conf=conf(vm_100=("node1", "started")))[1]
    assert "(idle, " in lines(ms=ms, conf=ServiceConfig())[1]  # not active, quorate, nothing configured
    out = lines(ms=ms, conf=ServiceConfig(), quorate=False)
    assert out[0] == "quorum No quorum on node 'node1'!"
    assert out[2] == "fencing standby (CRM watchdog standby)"


def test_lrm_modes_and_unreadable_status() -> None:
    ms = ManagerStatus(node_status={"n1": "maintenance", "n2": "online", "n3": "unknown"})
    lrm = {
        "n1": LrmStatus("maintenance", "maintenance", NOW - 100),
        "n2": LrmStatus("active", "restart", NOW),
        "n3": None,
    }
    out = lines(ms=ms, lrm=lrm, conf=ServiceConfig())
    assert out[2:] == [
        "lrm n1 (maintenance mode, watchdog standby, Wed Dec 31 23:58:20 2025)",
        "lrm n2 (restart mode, watchdog active, Thu Jan  1 00:00:00 2026)",
        "lrm n3 (unable to read lrm status)",
    ]


def test_disarm_lines() -> None:
    ms = ManagerStatus(master_node="node1", timestamp=NOW, disarm={"mode": "freeze", "state": "disarmed"})
    out = lines(ms=ms, conf=ServiceConfig(), lrm={"node1": LrmStatus("wait_for_agent_lock", "disarm", NOW)})
    assert out[1] == "master node1 (active, Thu Jan  1 00:00:00 2026) - disarmed, resource mode: freeze"
    assert out[2] == "fencing disarmed, resource mode: freeze (CRM watchdog released)"
    assert out[3] == "lrm node1 (disarm mode, watchdog released, Thu Jan  1 00:00:00 2026)"


def test_service_verbose_states() -> None:
    ms = ManagerStatus(
        service_status={
            "vm:1": ServiceData("stopped", "n1"),
            "vm:2": ServiceData("stopped", "n1"),
            "vm:3": ServiceData("started", "n1", running=True),
            "vm:4": ServiceData("error", "n1"),
            "vm:5": ServiceData("fence", "n2"),
            "vm:6": ServiceData("started", "n1"),
        }
    )
    c = conf(
        vm_1=("n1", "started"), vm_2=("n1", "disabled"), vm_3=("n1", "stopped"), vm_4=("n1", "disabled"),
        vm_5=("n2", "started"), vm_7=("n1", "ignored"),
    )  # fmt: skip
    got = {
        sid: service_verbose_state(sid, ms, c)[1]
        for sid in ["vm:1", "vm:2", "vm:3", "vm:4", "vm:5", "vm:6", "vm:7"]
    }
    assert got == {
        "vm:1": "starting",
        "vm:2": "disabled",
        "vm:3": "stopping",
        "vm:4": "clearing error flag",
        "vm:5": "fence",
        "vm:6": "deleting",
        "vm:7": "ignored",
    }


def test_perl_pretty_json() -> None:
    assert perl_pretty_json({"b": [1, {"x": None}], "a": "s", "e": {}}) == (
        '{\n   "a" : "s",\n   "b" : [\n      1,\n      {\n         "x" : null\n      }\n   ],\n   "e" : {}\n}'
    )


def test_live_status_shows_a_node_the_master_lost_at_once() -> None:
    """Issue #13: the LRM line of a node the master counts as not online says so within a round."""
    ms = ManagerStatus(
        master_node="node1", timestamp=NOW - 1,
        node_status={"node1": "online", "node2": "unknown", "node3": "fence"},
    )  # fmt: skip
    lrm = {n: LrmStatus("active", "active", NOW - 2) for n in ("node1", "node2", "node3")}
    live = lines(ms=ms, lrm=lrm, conf=ServiceConfig(), node_states=True)
    assert live[3:] == [
        "lrm node1 (active, watchdog active, Wed Dec 31 23:59:58 2025)",
        "lrm node2 (node unknown - dead?, watchdog standby, Wed Dec 31 23:59:58 2025)",
        "lrm node3 (node fence - dead?, watchdog standby, Wed Dec 31 23:59:58 2025)",
    ]
    # the reference's rule (and the default): the last status counts until 30 s old
    assert lines(ms=ms, lrm=lrm, conf=ServiceConfig())[4] == (
        "lrm node2 (active, watchdog active, Wed Dec 31 23:59:58 2025)"
    )
