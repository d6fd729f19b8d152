"""Typed records on a store: the shapes every backend writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ha.errors import ProtocolError
from ha.records import LrmResult, LrmStatus, ManagerStatus, ServiceData
from store import VersionConflict
from store import records as r
from store.dirstore import DirStore


@pytest.fixture
def st(tmp_path: Path) -> DirStore:
    return DirStore(tmp_path)


def test_manager_status_roundtrip(st: DirStore) -> None:
    ms, ver = r.read_manager_status(st)
    assert ver is None
    assert ms.service_status == {}
    ms = ManagerStatus(
        master_node="n1",
        timestamp=12.5,
        node_status={"n1": "online"},
        service_status={"proc:web": ServiceData(state="started", node="n1", uid="u1", running=True)},
    )
    v = r.write_manager_status(st, ms)
    back, v2 = r.read_manager_status(st)
    assert v2 == v
    assert back.to_dict() == ms.to_dict()
    raw = json.loads((Path(st.root) / "manager_status").read_bytes())
    assert raw["service_status"]["proc:web"] == {"state": "started", "node": "n1", "uid": "u1", "running": 1}
    with pytest.raises(VersionConflict):
        r.write_manager_status(st, ms, expect_version="stale")


def test_lrm_status_roundtrip(st: DirStore) -> None:
    assert r.read_lrm_status(st, "n1").results == {}
    status = LrmStatus(
        state="active", mode="active", timestamp=3.0, results={"u1": LrmResult("proc:a", "started", 0)}
    )
    r.write_lrm_status(st, "n1", status)
    assert st.list("nodes/") == ["nodes/n1/lrm_status"]
    assert r.read_lrm_status(st, "n1").to_dict() == status.to_dict()


def test_locations_cas(st: DirStore) -> None:
    assert r.read_location(st, "proc:web") == (None, None)
    v = r.write_location(st, "proc:web", "n1", expect_version="")
    node, v1 = r.read_location(st, "proc:web")
    assert (node, v1) == ("n1", v)
    r.write_location(st, "proc:web", "n2", expect_version=v1)
    with pytest.raises(VersionConflict):
        r.write_location(st, "proc:web", "n3", expect_version=v1)  # a second mover loses
    r.write_location(st, "ocf:db", "n3")
    assert r.read_locations(st) == {"proc:web": "n2", "ocf:db": "n3"}


def test_crm_commands_queue(st: DirStore) -> None:
    assert not r.any_pending_crm_command(st)
    r.queue_crm_command(st, "migrate proc:web n2\n")
    r.queue_crm_command(st, "arm-ha")
    assert r.any_pending_crm_command(st)
    assert r.take_crm_commands(st) == "migrate proc:web n2\narm-ha\n"
    assert not r.any_pending_crm_command(st)


def test_text_and_bad_json(st: DirStore) -> None:
    assert r.read_text(st, r.RESOURCES_CFG) == ("", None)
    st.write(r.RESOURCES_CFG, b"proc: web\n")
    assert r.read_text(st, r.RESOURCES_CFG)[0] == "proc: web\n"
    st.write(r.MANAGER_STATUS, b"{not json")
    with pytest.raises(ProtocolError, match="manager_status"):
        r.read_manager_status(st)
    assert r.agent_lease("n1") == "ha_agent_n1_lock"
