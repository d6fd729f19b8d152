"""Reading the service config with thousands of services: no full parse or full read per move (issue #15)."""

from __future__ import annotations

from pathlib import Path

import pytest

import actors.env as live_env
from ha.config.resources import parse_resources_cfg
from store import records as rec
from store.dirstore import DirStore
from tests import envstubs

TEXT = "proc: a\n\tnode n1\n\tcmd sleep 1\n\nproc: b\n\tnode n2\n\tcmd sleep 1\n\nproc: c\n\tcmd sleep 1\n"


def test_relocate_is_a_parse_with_the_new_locations() -> None:
    before = {"proc:a": "n3", "proc:c": "n2"}
    conf, _ = parse_resources_cfg(TEXT, nodes=before)
    for now in (
        {"proc:a": "n2", "proc:c": "n2"},
        {"proc:c": "n1"},
        {"proc:a": "n1", "proc:b": "n3", "proc:c": "n2"},
    ):
        c2 = conf.copy()
        assert c2.relocate(before, now)
        again, _ = parse_resources_cfg(TEXT, nodes=now)
        assert {s: cd.node for s, cd in c2.services.items()} == {
            s: cd.node for s, cd in again.services.items()
        }


def test_relocate_refuses_what_only_a_parse_can_tell() -> None:
    conf, errors = parse_resources_cfg(TEXT, nodes={})
    assert conf.nodeless == ["proc:c"] and len(errors) == 1  # no node of its own, no location
    assert not conf.copy().relocate({}, {"proc:c": "n1"})  # it gains one: parse again
    placed, _ = parse_resources_cfg(TEXT, nodes={"proc:c": "n1"})
    assert not placed.copy().relocate({"proc:c": "n1"}, {})  # it loses it: parse again


class CountingDir(DirStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []

    def read(self, name: str):  # type: ignore[no-untyped-def]
        self.reads.append(name)
        return super().read(name)


def test_locations_cache_reads_only_what_changed(tmp_path: Path) -> None:
    store = CountingDir(tmp_path)
    for i in range(50):
        rec.write_location(store, f"proc:s{i}", "n1")
    clock = [0.0]
    cache = rec.LocationsCache(full_every=30.0, clock=lambda: clock[0])
    assert cache.read(store) == {f"proc:s{i}": "n1" for i in range(50)}  # first: a full read
    store.reads.clear()
    assert len(cache.read(store)) == 50 and store.reads == []  # nothing changed: nothing read
    rec.write_location(store, "proc:s7", "n2")
    store.delete(rec.location_name("proc:s9"))
    store.reads.clear()  # (the write reads the record it replaces)
    got = cache.read(store)
    assert got["proc:s7"] == "n2" and "proc:s9" not in got and len(got) == 49
    assert sorted(store.reads) == ["locations/proc:s7", "locations/proc:s9"]
    store.reads.clear()
    clock[0] = 31.0  # the safety net: everything again now and then
    assert cache.read(store) == got and len(store.reads) == 49


def test_the_live_config_is_parsed_once_per_version_not_per_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DirStore(tmp_path)
    store.write(rec.RESOURCES_CFG, TEXT.encode())
    rec.write_location(store, "proc:c", "n1")
    env = live_env.LiveEnv(envstubs.context(store), "lrm")
    calls = []

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return parse_resources_cfg(*args, **kwargs)

    monkeypatch.setattr(live_env, "parse_resources_cfg", counting)
    assert {s: cd.node for s, cd in env.read_service_config().services.items()} == {
        "proc:a": "n1", "proc:b": "n2", "proc:c": "n1",
    }  # fmt: skip
    rec.write_location(store, "proc:a", "n3")  # a migration
    rec.write_location(store, "proc:c", "n2")
    conf = env.read_service_config()
    assert {s: cd.node for s, cd in conf.services.items()} == {"proc:a": "n3", "proc:b": "n2", "proc:c": "n2"}
    assert len(calls) == 1
    store.delete(rec.location_name("proc:c"))  # a section without a node loses its location: parsed again
    conf = env.read_service_config()
    assert "proc:c" not in conf.services or conf.incomplete
    assert len(calls) == 2
    store.write(rec.RESOURCES_CFG, TEXT.replace("sleep 1", "sleep 2").encode())  # a new version: parsed
    env.read_service_config()
    assert len(calls) == 3


def test_a_slave_crm_parses_the_status_once_per_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ha.manager import Manager  # noqa: PLC0415
    from ha.records import ManagerStatus, ServiceData  # noqa: PLC0415

    store = DirStore(tmp_path)
    rec.write_manager_status(store, ManagerStatus(master_node="n2"))
    env = live_env.LiveEnv(envstubs.context(store), "crm")
    parsed = []
    real = ManagerStatus.from_dict

    def counting(d, only_node=None):  # type: ignore[no-untyped-def]
        parsed.append(1)
        return real(d, only_node)

    monkeypatch.setattr(live_env.ManagerStatus, "from_dict", counting)
    first = env.read_manager_status()
    assert env.read_manager_status() is first and len(parsed) == 1 and first.master_node == "n2"
    rec.write_manager_status(store, ManagerStatus(master_node="n3"))
    assert env.read_manager_status().master_node == "n3" and len(parsed) == 2
    env._manager_lease_held = True  # the master too (issue #17): its Manager copies what it reads
    a, b = env.read_manager_status(), env.read_manager_status()
    assert a is b and a.master_node == "n3" and len(parsed) == 2
    rec.write_manager_status(
        store, ManagerStatus(master_node="n3", service_status={"vm:1": ServiceData("started", "n1", "u1")})
    )
    shared = env.read_manager_status()
    manager = Manager(env)
    manager.ss["vm:1"].state = "stopped"
    manager.ms.master_node = "n1"
    assert shared.service_status["vm:1"].state == "started" and shared.master_node == "n3"


def test_locations_cache_asks_nothing_while_the_watchers_epoch_stands(tmp_path: Path) -> None:
    """On etcd every changed_since is a request: the node's watcher tells when to ask."""

    class Asking(CountingDir):
        asked = 0

        def changed_since(self, token):  # type: ignore[no-untyped-def]
            Asking.asked += 1
            return super().changed_since(token)

    store = Asking(tmp_path)
    rec.write_location(store, "proc:a", "n1")
    clock = [0.0]
    cache = rec.LocationsCache(full_every=30.0, clock=lambda: clock[0])
    assert cache.read(store, epoch=1) == {"proc:a": "n1"}
    asked = Asking.asked
    rec.write_location(store, "proc:a", "n2")  # not seen by the watcher yet: the old answer
    assert cache.read(store, epoch=1) == {"proc:a": "n1"} and Asking.asked == asked
    assert cache.read(store, epoch=2) == {"proc:a": "n2"} and Asking.asked == asked + 1
    clock[0] = 31.0  # the safety net still looks now and then
    assert cache.read(store, epoch=2) == {"proc:a": "n2"} and Asking.asked == asked + 2


def test_the_master_reads_resources_cfg_once_per_look(tmp_path: Path) -> None:
    """On etcd each read is a request: the placement check and the parse share one read."""
    store = CountingDir(tmp_path)
    store.write(rec.RESOURCES_CFG, TEXT.encode())
    env = live_env.LiveEnv(envstubs.context(store), "crm")
    env.read_service_config()  # the first look places proc:c (no node)
    store.reads.clear()
    conf = env.read_service_config()
    assert store.reads.count(rec.RESOURCES_CFG) == 1, store.reads
    assert {sid: cd.node for sid, cd in conf.services.items()} == {
        "proc:a": "n1", "proc:b": "n2", "proc:c": conf.services["proc:c"].node
    }  # fmt: skip
    assert conf.services["proc:c"].node  # placed
    store.write(rec.RESOURCES_CFG, TEXT.replace("node n2", "node n3").encode())
    assert env.read_service_config().services["proc:b"].node == "n3"  # a new version is read and parsed
