"""Adding many resources in one change (admin.resources.add_resources): checked each, written once."""

from __future__ import annotations

from pathlib import Path

import pytest

from admin.errors import AdminError
from admin.resources import add_resource, add_resources
from store import records as rec
from store.dirstore import DirStore

NODES = ["n1", "n2", "n3"]


class CountingDir(DirStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writes: list[str] = []

    def write(self, name, data, expect_version=None):  # type: ignore[no-untyped-def]
        self.writes.append(name)
        return super().write(name, data, expect_version)


def entries(n: int, first: int = 0) -> list[tuple[str, dict[str, str]]]:
    return [(f"proc:s{i}", {"node": NODES[i % 3], "cmd": "sleep 1"}) for i in range(first, first + n)]


def test_many_resources_one_write(tmp_path: Path) -> None:
    store = CountingDir(tmp_path)
    made = add_resources(store, entries(50), NODES)
    assert [cd.sid for cd in made] == [f"proc:s{i}" for i in range(50)]
    assert store.writes == [rec.RESOURCES_CFG]
    text, _ = rec.read_text(store, rec.RESOURCES_CFG)
    assert text.count("proc: s") == 50 and "\tnode n2" in text


def test_all_or_nothing(tmp_path: Path) -> None:
    store = CountingDir(tmp_path)
    add_resource(store, "proc:s3", {"node": "n1", "cmd": "sleep 1"}, NODES)
    store.writes.clear()
    with pytest.raises(AdminError, match="already defined"):
        add_resources(store, entries(5), NODES)  # proc:s3 exists: none of the five is added
    with pytest.raises(AdminError, match="unknown node 'n9'"):
        add_resources(store, [("proc:x", {"node": "n9", "cmd": "sleep 1"}), *entries(2, 10)], NODES)
    with pytest.raises(AdminError, match="given twice"):
        add_resources(store, [*entries(2, 20), *entries(1, 20)], NODES)
    assert store.writes == []
    text, _ = rec.read_text(store, rec.RESOURCES_CFG)
    assert text.count("proc: s") == 1
