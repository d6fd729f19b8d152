"""The static scheduler's stats on live nodes (issue #14): node capacity records, maxcpu/maxmem properties.

Also the evidence for issue #16's "a new resource option is one schema entry plus its
meaning": ``maxcpu``/``maxmem`` are two ``Prop`` entries in ha/config/schema.py, and their
meaning is ``LiveEnv.get_service_stats`` here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from admin.resources import add_resource, set_resource
from agents.vmspec import static_caps
from ha.crs.stats import NodeStats, ServiceStats
from ha.errors import HaError
from store import records as rec
from store.dirstore import DirStore
from tests import envstubs

MIB = 1024 * 1024


def test_services_weigh_what_their_properties_say(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    add_resource(
        store, "proc:big", {"node": "n1", "cmd": "sleep 9", "maxcpu": "2.5", "maxmem": "512"}, envstubs.NODES
    )
    add_resource(store, "proc:small", {"node": "n2", "cmd": "sleep 9"}, envstubs.NODES)
    env = envstubs.live_env(store)
    stats = env.get_service_stats("static")
    assert stats == {"proc:big": ServiceStats(2.5, 512 * MIB), "proc:small": ServiceStats(0.0, 0.0)}
    set_resource(store, "proc:small", {"maxmem": "64"}, [])
    assert env.get_service_stats("static")["proc:small"] == ServiceStats(0.0, 64 * MIB)


def test_node_capacity_comes_from_what_each_node_published(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    env = envstubs.live_env(store)
    with pytest.raises(HaError, match="no node has published"):
        env.get_node_stats("static")  # the manager then falls back to basic, and logs it
    rec.write_capacity(store, "n1", 4, 8 * 1024 * MIB)
    rec.write_capacity(store, "n2", 16, 64 * 1024 * MIB)
    assert env.get_node_stats("static") == {
        "n1": NodeStats(4, 8 * 1024 * MIB), "n2": NodeStats(16, 64 * 1024 * MIB),
    }  # fmt: skip
    # dynamic needs what the nodes measured too (tests/test_live_dynamic_stats.py)
    with pytest.raises(HaError, match="no node has published its capacity and usage"):
        env.get_node_stats("dynamic")


def test_the_properties_are_checked_at_the_edge(tmp_path: Path) -> None:
    from admin.errors import AdminError  # noqa: PLC0415

    store = DirStore(tmp_path)
    with pytest.raises(AdminError, match="maxcpu"):
        add_resource(store, "proc:x", {"node": "n1", "cmd": "sleep 9", "maxcpu": "-1"}, envstubs.NODES)


def test_a_vm_weighs_its_cores_and_memory(tmp_path: Path) -> None:
    """As the reference derives a guest's static stats from its config (BEHAVIOUR.md, static
    scheduler: "real: derived from guest config"): a ``vm:`` counts its ``cores`` and ``memory``
    (the agent's defaults when unset); ``maxcpu``/``maxmem`` still say it when given."""
    store = DirStore(tmp_path)
    add_resource(store, "vm:100", {"node": "n1", "cores": "2", "memory": "1024"}, envstubs.NODES)
    add_resource(store, "vm:101", {"node": "n1"}, envstubs.NODES)
    add_resource(
        store, "vm:102", {"node": "n2", "cores": "4", "maxcpu": "1.5", "maxmem": "300"}, envstubs.NODES
    )
    add_resource(store, "ct:103", {"node": "n2"}, envstubs.NODES)
    env = envstubs.live_env(store)
    assert env.get_service_stats("static") == {
        "vm:100": ServiceStats(2.0, 1024 * MIB),
        "vm:101": ServiceStats(1.0, 256 * MIB),  # the vm agent's defaults (agents/vmspec.py)
        "vm:102": ServiceStats(1.5, 300 * MIB),
        "ct:103": ServiceStats(0.0, 0.0),  # a container has no limits yet: a whole node's share
    }


def test_a_malformed_vm_value_weighs_its_default() -> None:
    """A hand-edited resources.cfg may hold what the start refuses: it weighs what a guest with
    the default would, never nothing (0 would let the scheduler pack every such guest on one node)."""
    assert static_caps({"cores": "3", "memory": "512"}) == (3.0, 512.0)
    assert static_caps({"cores": "many", "memory": "8"}) == (1.0, 256.0)  # 8 MiB: below the minimum
