"""``ha-manager status`` names the scheduler the master USES, not only the configured one (issue #14).

The master records its last round's mode in ``manager_status.crs`` (ours; absent while
both modes are ``basic``, so a basic cluster's status keeps the reference's fields only).
"""

from __future__ import annotations

import time

from ha.config.resources import ServiceConfig
from ha.records import ManagerStatus
from ha.status import crs_suffix, status_lines
from sim.runner import run_scenario
from sim.scenario import load_scenario
from tests.conftest import TESTS

SCENARIOS = TESTS / "scenarios"


def master_line(ms: ManagerStatus, configured: str | None) -> dict[str, object]:
    lines = status_lines(
        node="node1", quorate=True, ms=ms, lrm={}, conf=ServiceConfig(), now=ms.timestamp or 0.0,
        fmt_time=time.ctime, crs_mode=configured,
    )  # fmt: skip
    line = next(ln for ln in lines if ln.type == "master")
    return line.to_dict() | {"text": line.text()}


def test_the_master_records_the_fallback_to_basic_and_status_says_so() -> None:
    sim = run_scenario(load_scenario(SCENARIOS / "104-crs-static-fallback-basic"))
    ms = sim.hw.manager_status
    why = "no maxcpu/maxmem for node 'node1' in hardware_status"
    assert ms.crs == {"mode": "basic", "configured": "static", "error": why}
    line = master_line(ms, "static")
    assert str(line["text"]).endswith(f" - basic load CRS instead of static: {why}")
    assert (line["crs"], line["crs_configured"]) == ("basic", "static")
    assert ManagerStatus.from_dict(ms.to_dict()).crs == ms.crs  # it survives the store


def test_a_mode_in_use_reads_as_the_reference_line() -> None:
    sim = run_scenario(load_scenario(SCENARIOS / "099-crs-static-recovery-capacity"))
    ms = sim.hw.manager_status
    assert ms.crs == {"mode": "static", "configured": "static"}
    line = master_line(ms, "static")
    assert str(line["text"]).endswith(") - static load CRS")
    assert line["crs"] == "static"


def test_a_basic_cluster_keeps_the_reference_fields_only() -> None:
    sim = run_scenario(load_scenario(SCENARIOS / "001-failover-network-loss"))
    ms = sim.hw.manager_status
    assert ms.crs is None and "crs" not in ms.to_dict()
    assert str(master_line(ms, "basic")["text"]).endswith(")")


def test_a_mode_the_master_has_not_read_yet_is_not_shown_as_in_use() -> None:
    ms = ManagerStatus(master_node="node1", timestamp=100.0)  # the last round: basic
    assert crs_suffix(ms, "dynamic") == " - basic load CRS, configured dynamic: not applied yet"
    ms.crs = {"mode": "static", "configured": "static"}
    assert crs_suffix(ms, "basic") == " - static load CRS, configured basic: not applied yet"
    assert crs_suffix(ms, "static") == " - static load CRS"
    # datacenter.cfg does not read now (its own status line says so): the master's mode stands
    assert crs_suffix(ms, None) == " - static load CRS"
    ms.crs = {"mode": "basic", "configured": "dynamic", "error": "no dynamic node stats for node 'n3'"}
    assert (
        crs_suffix(ms, "dynamic")
        == " - basic load CRS instead of dynamic: no dynamic node stats for node 'n3'"
    )
    assert crs_suffix(ManagerStatus(), "basic") == ""


def test_a_stopped_cluster_keeps_the_crs_part_after_the_stale_mark() -> None:
    from cli.ha_manager import _stopped_line  # noqa: PLC0415

    line = {"type": "master", "status": "node1 (active, Tue Dec  1 10:00:00 2026) - static load CRS"}
    assert _stopped_line(line) == (
        "master node1 (not running; stale, last known: active, Tue Dec  1 10:00:00 2026) - static load CRS"
    )
    lrm = {"type": "lrm", "status": "node2 (idle, watchdog standby, -)"}
    assert _stopped_line(lrm) == "lrm node2 (not running; stale, last known: idle, watchdog standby, -)"
