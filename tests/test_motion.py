"""The affinity checks of a move (ha/motion.py): the admin's motion info says what the master does.

The master's *queue motion* (BEHAVIOUR.md §5.6) is the reference: the same records
give the same blockers and the same comigrated partners in admin/commands.py
``motion_info`` as in ha/manager.py ``queue_resource_motion``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from admin.commands import motion_info
from admin.configfiles import read_config, read_rules
from ha.config.groups import GroupConfig
from ha.manager import Manager
from ha.records import ManagerStatus, ServiceData
from store import records as rec
from store.dirstore import DirStore

NODES = ["node1", "node2", "node3"]
RULES = """resource-affinity: together
\tresources vm:100,vm:101,vm:102
\taffinity positive

resource-affinity: apart
\tresources vm:100,vm:103
\taffinity negative
"""


def resources_cfg(ignored: tuple[str, ...] = ()) -> str:
    out = []
    for sid in ("vm:100", "vm:101", "vm:102", "vm:103"):
        state = "ignored" if sid in ignored else "started"
        out.append(f"vm: {sid.split(':')[1]}\n\tnode node1\n\tstate {state}\n")
    return "\n".join(out)


def sd(node: str, target: str | None = None) -> ServiceData:
    return ServiceData(state="started" if target is None else "migrate", node=node, uid="u", target=target)


# (case, service_status of the partners, ignored in the config, target of vm:100's move,
#  expected blockers, expected comigrated)
CASES = [
    ("partners move along", {"vm:101": sd("node1"), "vm:102": sd("node1"), "vm:103": sd("node3")}, (),
     "node2", [], ["vm:101", "vm:102"]),
    ("a partner already on the target stays", {"vm:101": sd("node1"), "vm:102": sd("node2"),
     "vm:103": sd("node3")}, (), "node2", [], ["vm:101"]),
    ("a partner already going to the target stays", {"vm:101": sd("node1", "node2"), "vm:102": sd("node1"),
     "vm:103": sd("node3")}, (), "node2", [], ["vm:102"]),
    ("an ignored partner stays", {"vm:101": sd("node1"), "vm:102": sd("node1"), "vm:103": sd("node3")},
     ("vm:102",), "node2", [], ["vm:101"]),
    ("a partner unknown to the master stays", {"vm:101": sd("node1"), "vm:103": sd("node3")}, (), "node2",
     [], ["vm:101"]),
    ("a negative partner on the target blocks", {"vm:101": sd("node1"), "vm:102": sd("node1"),
     "vm:103": sd("node3")}, (), "node3", ["vm:103"], ["vm:101", "vm:102"]),
    ("a negative partner leaving the target does not block", {"vm:103": sd("node3", "node2")}, (), "node3",
     [], []),
    ("a negative partner migrating to the target from elsewhere does not block (as the original)",
     {"vm:103": sd("node2", "node3")}, (), "node3", [], []),
]  # fmt: skip


def _store(tmp_path: Path, partners: dict[str, ServiceData], ignored: tuple[str, ...]) -> DirStore:
    store = DirStore(tmp_path)
    store.write(rec.RULES_CFG, RULES.encode())
    store.write(rec.RESOURCES_CFG, resources_cfg(ignored).encode())
    ms = ManagerStatus(master_node="node1")
    ms.node_status = dict.fromkeys(NODES, "online")
    ms.service_status = {"vm:100": sd("node1"), **partners}
    rec.write_manager_status(store, ms)
    return store


def _master_queues(store: DirStore, target: str) -> tuple[list[tuple[str, str]], dict[str, ServiceData]]:
    """The master's Manager, on the same records, handles ``migrate vm:100 <target>``."""
    logs: list[tuple[str, str]] = []
    m = object.__new__(Manager)
    m.env = SimpleNamespace(log=lambda level, msg: logs.append((level, msg)))
    m.ns = SimpleNamespace(list_nodes=lambda: NODES)  # type: ignore[assignment]
    m.ss = rec.read_manager_status(store)[0].service_status
    m.sc = read_config(store)[0]
    m.compile_rules(read_rules(store)[0], GroupConfig(), m.sc)
    m.queue_resource_motion(f"migrate vm:100 {target}", "migrate", "vm:100", target)
    return logs, m.ss


@pytest.mark.parametrize(
    ("partners", "ignored", "target", "blocking", "comigrated"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_admin_motion_info_agrees_with_the_master(
    tmp_path: Path,
    partners: dict[str, ServiceData],
    ignored: tuple[str, ...],
    target: str,
    blocking: list[str],
    comigrated: list[str],
) -> None:
    store = _store(tmp_path, partners, ignored)
    info = motion_info(store, "migrate", "vm:100", target, NODES)
    assert (info.blocking, info.comigrated) == (blocking, comigrated)

    logs, ss = _master_queues(store, target)
    errors = [msg for level, msg in logs if level == "err"]
    if blocking:
        assert errors == [
            f"crm command 'migrate vm:100 {target}' error - service '{blocking[0]}' on node '{target}' "
            "in negative affinity with service 'vm:100'"
        ]
        assert all(s.cmd is None for s in ss.values())
        return
    assert errors == []
    assert ss["vm:100"].cmd == ["migrate", target]
    moved = sorted(sid for sid, s in ss.items() if sid != "vm:100" and s.cmd is not None)
    assert moved == info.comigrated
