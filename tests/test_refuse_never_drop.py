"""Refuse, never drop (issue #10): a command the manager would ignore is refused before it is queued."""

from __future__ import annotations

from pathlib import Path

import pytest

from admin.commands import crm_command, move
from admin.errors import AdminError, ExitCode
from ha.records import ManagerStatus, ServiceData
from store import records as rec
from store.dirstore import DirStore

NODES = ["n1", "n2", "n3"]
CFG = b"proc: a\n\tcmd sleep 9\n\tnode n1\n\nproc: b\n\tcmd sleep 9\n\tnode n2\n"


def cluster(tmp_path: Path, state: str = "started", **ms_fields: object) -> DirStore:
    store = DirStore(tmp_path)
    store.write(rec.RESOURCES_CFG, CFG)
    ms = ManagerStatus(
        master_node="n1",
        node_status={n: "online" for n in NODES},
        service_status={
            "proc:a": ServiceData(state=state, node="n1"),
            "proc:b": ServiceData(state="started", node="n2"),
        },
    )
    for k, v in ms_fields.items():
        setattr(ms, k, v)
    rec.write_manager_status(store, ms)
    return store


def queued(store: DirStore) -> str:
    r = store.read(rec.CRM_COMMANDS)
    return "" if r is None else r.data.decode()


@pytest.mark.parametrize("line", ["migrate proc:a n2", "relocate proc:a n3", "stop proc:a 0"])
def test_commands_for_a_service_in_error_are_refused(tmp_path: Path, line: str) -> None:
    store = cluster(tmp_path, state="error")
    with pytest.raises(AdminError, match="error state") as e:
        crm_command(store, line, NODES)
    assert e.value.code == ExitCode.REFUSED and queued(store) == ""


@pytest.mark.parametrize("state", ["migrate", "request_stop", "fence", "recovery", "freeze"])
def test_a_move_of_a_service_in_transition_is_refused(tmp_path: Path, state: str) -> None:
    store = cluster(tmp_path, state=state)
    with pytest.raises(AdminError, match=f"state '{state}'"):
        move(store, "migrate", "proc:a", "n2", NODES)
    assert queued(store) == ""


def test_commands_while_disarmed_are_refused(tmp_path: Path) -> None:
    store = cluster(tmp_path, disarm={"mode": "freeze", "state": "disarmed"})
    for line in ("migrate proc:a n2", "stop proc:a 5"):
        with pytest.raises(AdminError, match="disarmed"):
            crm_command(store, line, NODES)
    assert queued(store) == ""


def test_maintenance_of_a_node_already_in_maintenance_is_refused(tmp_path: Path) -> None:
    store = cluster(tmp_path, node_status={"n1": "online", "n2": "maintenance", "n3": "online"})
    with pytest.raises(AdminError, match="already in maintenance"):
        crm_command(store, "enable-node-maintenance n2", NODES)
    assert queued(store) == ""


def test_stop_of_a_stopped_service_and_commands_for_unmanaged_ones_are_refused(tmp_path: Path) -> None:
    store = cluster(tmp_path, state="stopped")
    with pytest.raises(AdminError, match="already stopped"):
        crm_command(store, "stop proc:a 0", NODES)
    ms, _ = rec.read_manager_status(store)
    del ms.service_status["proc:b"]
    rec.write_manager_status(store, ms)
    with pytest.raises(AdminError, match="not taken it over yet"):
        crm_command(store, "migrate proc:b n3", NODES)
    assert queued(store) == ""


def test_what_the_manager_acts_on_is_queued(tmp_path: Path) -> None:
    store = cluster(tmp_path)
    move(store, "migrate", "proc:a", "n2", NODES)
    crm_command(store, "stop proc:b 10", NODES)
    crm_command(store, "enable-node-maintenance n3", NODES)
    assert queued(store) == "migrate proc:a n2\nstop proc:b 10\nenable-node-maintenance n3\n"
