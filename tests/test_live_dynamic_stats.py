"""The ``dynamic`` scheduler's stats on live nodes (issue #14): measured usage in lrm_status.

The LRM's Env carries what its node's sampler measured in the ``lrm_status`` writes
it makes anyway (a write of its own only for the node's first measurement); the
master's Env turns the nodes' reports into ``NodeStats``/``ServiceStats``
(actors/env.py ``_measured``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import actors.env as live_env
from admin.resources import add_resource, set_resource
from agents.usage import MIB, UsageSampler
from ha.crs.stats import NodeStats, ServiceStats
from ha.crs.usage import LoadUsage
from ha.errors import HaError
from ha.records import LrmResult, LrmStatus, ManagerStatus
from store import records as rec
from store.dirstore import DirStore
from tests import envstubs
from tests.envstubs import Clock

GIB = 1024 * MIB


class CountingStore(DirStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writes: list[str] = []

    def write(self, name: str, data: bytes, expect_version: str | None = None) -> str:
        self.writes.append(name)
        return super().write(name, data, expect_version)


def set_cpu(cg: Path, usec: int, mem: int) -> None:
    cg.mkdir(parents=True, exist_ok=True)
    (cg / "cgroup.procs").write_text("")
    (cg / "cpu.stat").write_text(f"usage_usec {usec}\n")
    (cg / "memory.current").write_text(f"{mem}\n")


# -- the record ----------------------------------------------------------------------------------


def test_usage_round_trips_through_lrm_status_and_the_core_ignores_it(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    status = LrmStatus("active", "active", 12.0, {"u1": LrmResult("proc:a", "started", 0)})
    usage = rec.NodeUsage(1.234, 512 * MIB + 7, {"proc:a": (0.5049, 64 * MIB), "ocf:b": (0.0, 3 * MIB)})
    rec.write_lrm_status(store, "n1", status, usage)
    raw = json.loads(store.read(rec.lrm_status_name("n1")).data)  # type: ignore[union-attr]
    assert raw["usage"] == {
        "cpu": 1.23, "mem": 512 * MIB + 7, "services": {"ocf:b": [0.0, 3 * MIB], "proc:a": [0.5, 64 * MIB]},
    }  # fmt: skip
    back, got = rec.read_lrm_status_and_usage(store, "n1")
    assert back.to_dict() == status.to_dict() == LrmStatus.from_dict(raw).to_dict()
    assert got == rec.NodeUsage(1.23, 512 * MIB + 7, {"ocf:b": (0.0, 3 * MIB), "proc:a": (0.5, 64 * MIB)})
    rec.write_lrm_status(store, "n1", status)  # without usage: none
    assert rec.read_lrm_status_and_usage(store, "n1")[1] is None
    assert rec.read_lrm_status_and_usage(store, "n2") == (LrmStatus(), None)


@pytest.mark.parametrize(
    "raw",
    [None, [], {"cpu": 1}, {"cpu": "1", "mem": 2}, {"cpu": -1, "mem": 2}, {"cpu": True, "mem": 2}],
)
def test_malformed_usage_is_no_usage(raw: object) -> None:
    assert rec.NodeUsage.from_dict(raw) is None


def test_malformed_service_entries_are_left_out() -> None:
    services = {"a": [1, 2], "b": [1], "c": "x", "d": [-1, 0]}
    got = rec.NodeUsage.from_dict({"cpu": 1, "mem": 2, "services": services})
    assert got == rec.NodeUsage(1.0, 2.0, {"a": (1.0, 2.0)})


# -- the LRM side: usage rides along with the writes it makes anyway ----------------------------------------


def test_usage_rides_along_with_the_writes_the_lrm_makes_anyway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CountingStore(tmp_path / "store")
    node_cg = tmp_path / "cg" / "n1"
    set_cpu(node_cg, 0, GIB)  # memory.current: the node's memory
    set_cpu(node_cg / "_daemon", 0, 0)
    set_cpu(node_cg / "web", 0, 100 * MIB)
    clock = Clock(1000.0)
    sampler = UsageSampler(node_cg, interval=2.0, smoothing=4.0, clock=clock)
    ctx = envstubs.context(store)
    ctx.usage = sampler
    env = live_env.LiveEnv(ctx, "lrm")
    mono = [500.0]
    monkeypatch.setattr(live_env.time, "monotonic", lambda: mono[0])
    status = LrmStatus("active", "active", 1.0, {})
    name = rec.lrm_status_name("n1")

    def tick(seconds: float, node_usec: int, web_usec: int) -> None:
        clock.now += seconds
        mono[0] += seconds
        set_cpu(node_cg / "_daemon", node_usec - web_usec, 0)  # the node: the sum of its cgroups
        set_cpu(node_cg / "web", web_usec, 100 * MIB)
        env.write_lrm_status(status)

    env.write_lrm_status(status)  # the first write: under the basic scheduler, no usage
    assert store.writes == [name] and rec.read_lrm_status_and_usage(store, "n1")[1] is None
    # at rest under the basic scheduler: nothing changed, so no sample and no write (issue #17)
    for i in range(1, 5):
        tick(2.0, 500_000 + 4_000_000 * i, 250_000 + 3_000_000 * i)
    assert store.writes == [name] and sampler.samples == 0
    # the status changes: written at once, still without a sample (nobody reads one: issue #15)
    mono[0] += 0.5
    clock.now += 0.5
    status = LrmStatus("active", "active", 2.0, {"u1": LrmResult("proc:web", "started", 0)})
    env.write_lrm_status(status)
    assert store.writes == [name] * 2 and sampler.samples == 0
    assert rec.read_lrm_status_and_usage(store, "n1")[1] is None
    # dynamic is configured, the master fell back to basic for want of measurements: the LRM
    # measures and writes its first measurement as soon as it has a rate
    ms = ManagerStatus(master_node="n2", crs={"mode": "basic", "configured": "dynamic", "error": "no stats"})
    store.write(rec.MANAGER_STATUS, json.dumps(ms.to_dict()).encode())
    env.read_manager_status()
    for _ in range(2):
        tick(2.0, 500_000 + 4_000_000 * 4, 250_000 + 3_000_000 * 4)  # idle
    assert store.writes == [name] * 2 + [rec.MANAGER_STATUS, name]
    written = rec.read_lrm_status_and_usage(store, "n1")[1]
    assert written is not None and written.services["proc:web"][0] < 0.5
    # the load rises: the moved usage is written, at most every USAGE_REFRESH s
    for i in range(1, int(live_env.USAGE_REFRESH) + 2):
        tick(1.0, 500_000 + 4_000_000 * 4 + 2_000_000 * i, 250_000 + 3_000_000 * 4 + 1_500_000 * i)
    assert store.writes == [name] * 2 + [rec.MANAGER_STATUS, name, name]
    written = rec.read_lrm_status_and_usage(store, "n1")[1]
    assert written is not None and written.services["proc:web"][0] > 1.0
    samples = sampler.samples
    for _ in range(int(live_env.USAGE_REFRESH)):  # steady now: sampled, but no more writes
        tick(2.0, 500_000 + 4_000_000 * 4, 250_000 + 3_000_000 * 4)
    assert sampler.samples > samples


def test_a_node_without_a_sampler_writes_no_usage(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    env = live_env.LiveEnv(envstubs.context(store), "lrm")
    env.write_lrm_status(LrmStatus("active", "active", 1.0, {}))
    assert rec.read_lrm_status_and_usage(store, "n1") == (LrmStatus("active", "active", 1.0, {}), None)


# -- the master side: NodeStats and ServiceStats ----------------------------------------------------------


class PeersDown(envstubs.Quorate):
    def __init__(self, down: set[str]) -> None:
        self.down = frozenset(down)

    def peers_up(self) -> frozenset[str]:
        return frozenset(envstubs.NODES) - self.down


def test_an_old_report_of_a_node_up_on_the_bus_is_current(tmp_path: Path) -> None:
    """An unchanged lrm_status is not written again (issue #17): its age says nothing of a live node."""
    store = DirStore(tmp_path)
    add_resource(store, "proc:a", {"node": "n2", "cmd": "sleep 9"}, envstubs.NODES)
    for n in envstubs.NODES:
        rec.write_capacity(store, n, 2, 8 * GIB)
        report(store, n, rec.NodeUsage(0.2, GIB, {}), age=live_env.USAGE_MAX_AGE + 60)
    old = live_env.USAGE_MAX_AGE + 60
    report(store, "n2", rec.NodeUsage(0.7, GIB, {"proc:a": (0.5, 100 * MIB)}), age=old)
    env = envstubs.live_env(store)
    env.ctx.membership = PeersDown({"n3"})
    for n in envstubs.NODES:
        env.read_lrm_status(n)
    nodes = env.get_node_stats("dynamic")
    assert set(nodes) == {"n1", "n2"}  # n3 is down on the bus and its report old: not used
    assert nodes["n2"].cpu == pytest.approx(0.7)


def report(store: DirStore, node: str, usage: rec.NodeUsage, age: float = 0.0) -> None:
    rec.write_lrm_status(store, node, LrmStatus("active", "active", time.time() - age, {}), usage)


def test_node_stats_count_each_service_where_it_is_located(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    for sid, node in (("proc:a", "n1"), ("proc:b", "n1"), ("proc:c", "n2")):
        add_resource(store, sid, {"node": node, "cmd": "sleep 9", "maxcpu": "1"}, envstubs.NODES)
    for n in envstubs.NODES:
        rec.write_capacity(store, n, 2, 8 * GIB)
    env = envstubs.live_env(store)
    env.ctx.membership = PeersDown({"n3"})
    with pytest.raises(HaError, match="capacity and usage"):
        env.get_node_stats("dynamic")  # nobody measured anything yet
    report(store, "n1", rec.NodeUsage(1.3, 2 * GIB, {"proc:a": (0.6, 512 * MIB), "proc:b": (0.6, 512 * MIB)}))
    report(store, "n2", rec.NodeUsage(0.5, GIB, {"proc:c": (0.4, 256 * MIB)}))
    report(store, "n3", rec.NodeUsage(0.1, 512 * MIB, {}), age=live_env.USAGE_MAX_AGE + 5)  # stale
    for n in envstubs.NODES:
        env.read_lrm_status(n)  # the master's round reads every lrm_status first
    nodes = env.get_node_stats("dynamic")
    # n3's report is too old and n3 is not up on the bus: missing (the manager falls back)
    assert set(nodes) == {"n1", "n2"}
    assert nodes["n1"] == NodeStats(2, 8 * GIB, pytest.approx(1.3), 2 * GIB)
    assert nodes["n2"] == NodeStats(2, 8 * GIB, pytest.approx(0.5), GIB)
    assert env.get_service_stats("dynamic") == {
        "proc:a": ServiceStats(1, 0, 0.6, 512 * MIB),
        "proc:b": ServiceStats(1, 0, 0.6, 512 * MIB),
        "proc:c": ServiceStats(1, 0, 0.4, 256 * MIB),
    }
    # proc:b moves to n3 (its location changes); n1 still reports it (not written since), n3
    # reports again: its load counts on n3 at once, and not on n1
    rec.write_location(store, "proc:b", "n3")
    report(store, "n3", rec.NodeUsage(0.1, 512 * MIB, {}))
    for n in envstubs.NODES:
        env.read_lrm_status(n)
    nodes = env.get_node_stats("dynamic")
    assert nodes["n1"] == NodeStats(2, 8 * GIB, pytest.approx(0.7), pytest.approx(1.5 * GIB))
    assert nodes["n3"] == NodeStats(2, 8 * GIB, pytest.approx(0.7), pytest.approx(1.0 * GIB))
    # once n3 measured it, its own numbers count
    report(store, "n3", rec.NodeUsage(0.9, GIB, {"proc:b": (0.8, 300 * MIB)}))
    env.read_lrm_status("n3")
    assert env.get_service_stats("dynamic")["proc:b"] == ServiceStats(1, 0, 0.8, 300 * MIB)
    assert env.get_node_stats("dynamic")["n3"] == NodeStats(2, 8 * GIB, pytest.approx(0.9), GIB)


def test_a_moved_service_keeps_its_last_measurement_until_its_new_node_measured_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DirStore(tmp_path)
    add_resource(store, "proc:a", {"node": "n1", "cmd": "sleep 9"}, envstubs.NODES)
    add_resource(store, "proc:b", {"node": "n1", "cmd": "sleep 9"}, envstubs.NODES)
    for n in envstubs.NODES:
        rec.write_capacity(store, n, 2, 8 * GIB)
    env = envstubs.live_env(store)

    def round_() -> dict[str, NodeStats]:
        for n in envstubs.NODES:
            env.read_lrm_status(n)
        return env.get_node_stats("dynamic")

    both = {"proc:a": (0.5, 100 * MIB), "proc:b": (0.5, 100 * MIB)}
    report(store, "n1", rec.NodeUsage(1.1, 300 * MIB, both))
    report(store, "n2", rec.NodeUsage(0.1, 100 * MIB, {}))
    report(store, "n3", rec.NodeUsage(0.1, 100 * MIB, {}))
    assert round_()["n1"].cpu == pytest.approx(1.1)
    # proc:a moved to n2: n1 already wrote without it, n2 has not measured it yet
    rec.write_location(store, "proc:a", "n2")
    report(store, "n1", rec.NodeUsage(0.6, 200 * MIB, {"proc:b": (0.5, 100 * MIB)}))
    nodes = round_()
    assert nodes["n1"].cpu == pytest.approx(0.6)
    assert nodes["n2"] == NodeStats(2, 8 * GIB, pytest.approx(0.6), pytest.approx(200 * MIB))
    assert env.get_service_stats("dynamic")["proc:a"] == ServiceStats(0, 0, 0.5, 100 * MIB)
    # not for ever: USAGE_MAX_AGE later it no longer counts (n2 still has not measured it)
    later = time.time() + live_env.USAGE_MAX_AGE + 1
    for n in envstubs.NODES:
        report(
            store,
            n,
            rec.read_lrm_status_and_usage(store, n)[1] or rec.NodeUsage(0, 0),
            age=-(later - time.time()),
        )
    monkeypatch.setattr(live_env.time, "time", lambda: later)
    assert round_()["n2"].cpu == pytest.approx(0.1)
    assert env.get_service_stats("dynamic")["proc:a"] == ServiceStats(0, 0, 0.0, 0.0)


def test_a_service_requested_stopped_keeps_no_last_measurement(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    add_resource(store, "proc:a", {"node": "n1", "cmd": "sleep 9"}, envstubs.NODES)
    for n in envstubs.NODES:
        rec.write_capacity(store, n, 2, 8 * GIB)
        report(store, n, rec.NodeUsage(0.1, 100 * MIB, {}))
    report(store, "n1", rec.NodeUsage(0.6, 200 * MIB, {"proc:a": (0.5, 100 * MIB)}))
    env = envstubs.live_env(store)
    for n in envstubs.NODES:
        env.read_lrm_status(n)
    assert env.get_node_stats("dynamic")["n1"].cpu == pytest.approx(0.6)
    set_resource(store, "proc:a", {"state": "stopped"}, [])
    report(store, "n1", rec.NodeUsage(0.1, 100 * MIB, {}))  # it stopped: its cgroup is gone
    env.read_lrm_status("n1")
    assert env.get_node_stats("dynamic")["n1"].cpu == pytest.approx(0.1)


def test_measured_stats_drive_a_balancing_migration(tmp_path: Path) -> None:
    """The core's dynamic usage on what the master's Env reports: the busy node gives a service away."""
    store = DirStore(tmp_path)
    for sid in ("proc:a", "proc:b", "proc:c"):
        add_resource(store, sid, {"node": "n1", "cmd": "sleep 9"}, envstubs.NODES)
    for n in envstubs.NODES:
        rec.write_capacity(store, n, 2, 8 * GIB)
    busy = {sid: (0.6, 64 * MIB) for sid in ("proc:a", "proc:b", "proc:c")}
    report(store, "n1", rec.NodeUsage(1.85, 300 * MIB, busy))
    report(store, "n2", rec.NodeUsage(0.05, 100 * MIB, {}))
    report(store, "n3", rec.NodeUsage(0.05, 100 * MIB, {}))
    env = envstubs.live_env(store)
    load = LoadUsage("dynamic", env.get_node_stats("dynamic"), env.get_service_stats("dynamic"), env.log)
    for n in envstubs.NODES:
        load.add_node(n)
    for sid in busy:
        load.add_service_usage(sid, "started", "n1", None, running=True)
    assert load.imbalance() > 1.0
    from ha.crs.usage import BalanceCandidate  # noqa: PLC0415

    cands = [BalanceCandidate(sid, "n1", (sid,), ("n2", "n3")) for sid in sorted(busy)]
    move = load.select_best_balancing_migration(cands, "bruteforce")
    assert move is not None and (move.sid, move.source, move.target) == ("proc:a", "n1", "n2")
    assert move.imbalance < load.imbalance()
