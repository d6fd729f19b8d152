"""``admin.configfiles.read_config`` on a long-lived store (a node's API): kept parse, followed moves.

Issue #15: each ``migrate`` through the API read every location record and parsed the
whole resources.cfg, twice; at 2,000 services one command took about 0.5 s and moving
100 services back to a node took 100 s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from admin.commands import move
from admin.configfiles import read_config
from admin.resources import add_resources, set_resource
from ha.records import ManagerStatus
from store import records as rec
from store.dirstore import DirStore

NODES = ["node1", "node2", "node3"]


class CountingStore:
    """The dir store, counting reads of location records."""

    def __init__(self, inner: DirStore) -> None:
        self.inner = inner
        self.location_reads = 0

    def read(self, name: str) -> Any:
        if name.startswith(rec.LOCATIONS):
            self.location_reads += 1
        return self.inner.read(name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    st = DirStore(tmp_path)
    st.write(rec.RESOURCES_CFG, b"")
    entries = [(f"proc:s{i}", {"node": NODES[i % 3], "cmd": "exec sleep 1000"}) for i in range(60)]
    add_resources(st, entries, NODES)
    for sid, o in entries:
        rec.write_location(st, sid, o["node"])
    services = {sid: {"state": "started", "node": o["node"], "uid": "u"} for sid, o in entries}
    ms = {"master_node": "node1", "node_status": dict.fromkeys(NODES, "online"), "service_status": services}
    rec.write_manager_status(st, ManagerStatus.from_dict(ms))
    return CountingStore(st)


def test_a_second_read_reads_no_location_again(store: CountingStore) -> None:
    read_config(store)  # type: ignore[arg-type]
    before = store.location_reads
    conf, _ = read_config(store)  # type: ignore[arg-type]
    assert store.location_reads == before  # the old code: all 60 again
    assert conf.services["proc:s4"].node == "node2"


def test_a_moved_location_is_followed_reading_only_it(store: CountingStore) -> None:
    read_config(store)  # type: ignore[arg-type]
    _, version = rec.read_location(store.inner, "proc:s4")
    rec.write_location(store.inner, "proc:s4", "node3", version)
    before = store.location_reads
    conf, _ = read_config(store)  # type: ignore[arg-type]
    assert conf.services["proc:s4"].node == "node3"
    assert store.location_reads - before <= 2


def test_a_new_version_of_the_file_is_parsed_again(store: CountingStore) -> None:
    read_config(store)  # type: ignore[arg-type]
    set_resource(store.inner, "proc:s5", {"max_restart": "3"}, [], None, NODES)
    conf, version = read_config(store)  # type: ignore[arg-type]
    assert conf.services["proc:s5"].max_restart == 3
    assert version == store.inner.read(rec.RESOURCES_CFG).version  # type: ignore[union-attr]


def test_each_caller_gets_its_own_copy(store: CountingStore) -> None:
    first, _ = read_config(store)  # type: ignore[arg-type]
    first.services["proc:s1"].node = "elsewhere"
    del first.services["proc:s2"]
    again, _ = read_config(store)  # type: ignore[arg-type]
    assert again.services["proc:s1"].node == "node2" and "proc:s2" in again.services


def test_migrate_commands_read_no_location_after_the_first(store: CountingStore) -> None:
    move(store, "migrate", "proc:s0", "node2", NODES)  # type: ignore[arg-type]
    before = store.location_reads
    for i in (3, 6, 9):
        move(store, "migrate", f"proc:s{i}", "node3", NODES)  # type: ignore[arg-type]
    assert store.location_reads == before  # the old code: 2 x 60 per command
    queued = rec.read_text(store.inner, rec.CRM_COMMANDS)[0].splitlines()
    assert queued[-3:] == [f"migrate proc:s{i} node3" for i in (3, 6, 9)]
