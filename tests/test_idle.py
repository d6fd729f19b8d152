"""A node at rest writes nothing and re-checks its services only every re-check interval (issue #17)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from actors.env import LiveEnv, NodeContext
from actors.lrm import PacedLRM
from ha.config.resources import ResourceConfig, ServiceConfig
from ha.constants import REFERENCE_TIMING
from ha.errors import LockLost
from ha.records import LrmResult, LrmStatus, ManagerStatus, ServiceData
from store import records as rec
from store.dirstore import INTERNAL, DirStore
from store.inotify import DirWatch
from tests.envstubs import Clock, NoWatchdog, Quorate
from tests.test_lrm_pool import FakePool, PoolEnv

# -- re-checks paced (actors/lrm.py PacedLRM) ------------------------------------------------


def paced(interval: float = 10.0) -> tuple[PoolEnv, FakePool, PacedLRM, Clock]:
    conf = ServiceConfig({"vm:100": ResourceConfig(sid="vm:100", type="vm", name="100", node="node1")})
    ms = ManagerStatus(
        node_status={"node1": "online"}, service_status={"vm:100": ServiceData("started", "node1", "u1")}
    )
    env = PoolEnv(ms, conf)
    pool, clock = FakePool(), Clock()
    return env, pool, PacedLRM(env, pool, REFERENCE_TIMING, interval, clock), clock


def set_request(env: PoolEnv, state: str, uid: str, node: str = "node1") -> None:
    env.ms = ManagerStatus(
        node_status={"node1": "online"}, service_status={"vm:100": ServiceData(state, node, uid)}
    )


def ran(pool: FakePool) -> list[tuple[str | None, str]]:
    return [(j.uid, j.state) for j in pool.started]


def test_a_recheck_waits_for_the_next_round_and_anything_else_runs_at_once() -> None:
    env, pool, lrm, clock = paced(10.0)
    lrm.do_one_iteration()
    assert ran(pool) == [("u1", "started")]  # the first start: at once
    pool.finished.append(("vm:100", 0))
    lrm.do_one_iteration()
    assert lrm.results["u1"].exit_code == 0
    set_request(env, "started", "u2")  # the master's re-check
    for _ in range(5):
        clock.now += 1.0
        lrm.do_one_iteration()
    assert ran(pool) == [("u1", "started")]  # not yet
    clock.now += 5.0
    lrm.do_one_iteration()
    assert ran(pool) == [("u1", "started"), ("u2", "started")]  # the re-check round came
    pool.finished.append(("vm:100", 0))
    lrm.do_one_iteration()
    set_request(env, "request_stop", "u3")  # not a re-check: at once
    clock.now += 0.5
    lrm.do_one_iteration()
    assert ran(pool)[-1] == ("u3", "request_stop")


def test_between_recheck_rounds_an_unchanged_node_skips_its_pass_and_a_new_request_runs_at_once() -> None:
    env, pool, lrm, clock = paced(10.0)
    lrm.do_one_iteration()
    pool.finished.append(("vm:100", 0))
    lrm.do_one_iteration()
    skipped = lrm.passes_skipped
    for _ in range(6):
        clock.now += 0.5
        lrm.do_one_iteration()
    assert lrm.passes_skipped >= skipped + 5  # no pass over the services: nothing it reads changed
    set_request(env, "request_stop", "u3")
    clock.now += 0.5
    lrm.do_one_iteration()
    assert ran(pool)[-1] == ("u3", "request_stop")
    clock.now += 10.0  # a re-check round always passes
    skipped = lrm.passes_skipped
    pool.finished.append(("vm:100", 0))
    lrm.do_one_iteration()
    assert lrm.passes_skipped == skipped


def many(n: int, uid: str) -> ManagerStatus:
    return ManagerStatus(
        node_status={"node1": "online"},
        service_status={f"vm:{i}": ServiceData("started", "node1", f"{uid}{i}") for i in range(n)},
    )


def test_a_recheck_round_goes_on_without_whole_iterations_until_something_is_to_publish() -> None:
    sids = [f"vm:{i}" for i in range(6)]
    conf = ServiceConfig({s: ResourceConfig(sid=s, type="vm", name=s[3:], node="node1") for s in sids})
    env, pool, clock = PoolEnv(many(6, "a"), conf), FakePool(), Clock()
    lrm = PacedLRM(env, pool, REFERENCE_TIMING, 10.0, clock)
    lrm.do_one_iteration()
    assert len(pool.started) == 4  # the first starts, four at a time
    pool.finished += [(s, 0) for s in sids[:4]]
    assert not lrm.collect_quietly()  # first starts: results the master must see
    lrm.do_one_iteration()
    pool.finished += [(s, 0) for s in sids[4:]]
    lrm.do_one_iteration()
    assert len(lrm.published_results()) == 6
    env.ms = many(6, "b")  # the master's re-checks
    clock.now += 10.0
    lrm.do_one_iteration()
    assert [j.uid for j in pool.started[6:]] == ["b0", "b1", "b2", "b3"]
    pool.finished.append(("vm:0", 0))
    assert lrm.collect_quietly()  # a good check: collected, the next one started, no iteration
    assert [j.uid for j in pool.started[10:]] == ["b4"]
    pool.finished.append(("vm:1", 1))
    assert not lrm.collect_quietly()  # a failed check: a whole iteration publishes it at once
    lrm.do_one_iteration()
    assert "b1" in lrm.published_results()
    env.ms = many(6, "c")  # a new request while re-checks are queued
    pool.finished.append(("vm:2", 0))
    assert not lrm.collect_quietly()  # SAFETY: not started from an old request


class QuickAgent:
    """An agent whose check is cheap (proc, ct): the LRM may ask it on its own thread."""

    quick_check = True

    def __init__(self) -> None:
        self.running = True
        self.checks = 0

    def check_running(self, env: object, sid: str, conf: object) -> bool:
        self.checks += 1
        return self.running


def test_a_recheck_of_a_quick_agent_is_answered_without_a_worker_unless_it_is_down() -> None:
    env, pool, lrm, clock = paced(10.0)
    agent = QuickAgent()
    env.resource_plugin = lambda rtype: agent  # type: ignore[method-assign]
    lrm.do_one_iteration()
    assert ran(pool) == [("u1", "started")]  # a first start: a worker, whatever the agent
    pool.finished.append(("vm:100", 0))
    lrm.do_one_iteration()
    set_request(env, "started", "u2")  # the master's re-check
    clock.now += 10.0
    lrm.do_one_iteration()
    assert ran(pool) == [("u1", "started")] and agent.checks == 1  # checked here
    assert lrm.results["u2"].exit_code == 0 and "u2" in lrm.quiet  # answered as a worker would
    agent.running = False  # it died: the next round's re-check goes to a worker, which starts it
    clock.now += 10.0
    lrm.do_one_iteration()
    assert ran(pool) == [("u1", "started"), ("u2", "started")]


def test_a_failed_check_is_followed_at_once() -> None:
    env, pool, lrm, clock = paced(10.0)
    lrm.do_one_iteration()
    pool.finished.append(("vm:100", 0))
    lrm.do_one_iteration()
    set_request(env, "started", "u2")
    clock.now += 10.0
    lrm.do_one_iteration()
    assert ran(pool)[-1] == ("u2", "started")
    pool.finished.append(("vm:100", 1 << 8))  # the check found it dead and could not start it
    lrm.do_one_iteration()
    set_request(env, "started", "u3")  # the master's answer: try again
    clock.now += 0.5
    lrm.do_one_iteration()
    assert ran(pool)[-1] == ("u3", "started")


def test_a_done_stop_is_repeated_only_every_round() -> None:
    env, pool, lrm, clock = paced(10.0)
    lrm.do_one_iteration()  # active, with a started service
    pool.finished.append(("vm:100", 0))
    lrm.do_one_iteration()
    set_request(env, "stopped", "s1")
    clock.now += 0.5
    lrm.do_one_iteration()
    assert ran(pool)[-1] == ("s1", "stopped")  # at once
    pool.finished.append(("vm:100", 0))
    lrm.do_one_iteration()
    n = len(pool.started)
    for _ in range(5):
        clock.now += 1.0
        lrm.do_one_iteration()
    assert len(pool.started) == n
    clock.now += 5.0
    lrm.do_one_iteration()
    assert ran(pool)[-1] == ("s1", "stopped")


def test_a_successful_recheck_is_not_published_and_is_run_again_here_every_round() -> None:
    env, pool, lrm, clock = paced(10.0)
    env.conf.services["vm:100"].max_restart = 0  # a failed start is a result at once, no retry
    lrm.do_one_iteration()
    pool.finished.append(("vm:100", 0))
    lrm.do_one_iteration()
    assert env.written[-1].results == {"u1": LrmResult("vm:100", "started", 0)}  # a first start: published
    set_request(env, "started", "u2")  # the master consumed u1 and asks for a re-check (§4 rule (c))
    clock.now += 10.0
    lrm.do_one_iteration()
    pool.finished.append(("vm:100", 0))
    lrm.do_one_iteration()
    assert "u2" not in env.written[-1].results  # quiet: the master sees nothing to renew
    for round_ in range(3):  # the master's request stays u2; this LRM re-checks on its own
        n = len(pool.started)
        clock.now += 5.0
        lrm.do_one_iteration()
        assert len(pool.started) == n  # not before the round
        clock.now += 5.0
        lrm.do_one_iteration()
        assert ran(pool)[n:] == [("u2", "started")], round_
        pool.finished.append(("vm:100", 0))
        lrm.do_one_iteration()
        assert all("u2" not in w.results for w in env.written)
    clock.now += 10.0
    lrm.do_one_iteration()
    pool.finished.append(("vm:100", 1 << 8))  # this round's check found it dead and could not start it
    lrm.do_one_iteration()
    assert env.written[-1].results["u2"].exit_code == 1  # a failure is published at once
    set_request(env, "started", "u3")  # the master's answer: try again, at once
    clock.now += 0.5
    lrm.do_one_iteration()
    assert ran(pool)[-1] == ("u3", "started")


def test_a_quiet_result_is_dropped_when_the_request_changes() -> None:
    env, pool, lrm, clock = paced(10.0)
    lrm.do_one_iteration()
    pool.finished.append(("vm:100", 0))
    lrm.do_one_iteration()
    set_request(env, "started", "u2")
    clock.now += 10.0
    lrm.do_one_iteration()
    pool.finished.append(("vm:100", 0))
    lrm.do_one_iteration()
    assert lrm.quiet == {"u2"}
    set_request(env, "request_stop", "u3")
    clock.now += 10.0  # a re-check round: u2 must not run again, the stop runs
    lrm.do_one_iteration()
    assert ran(pool)[-1] == ("u3", "request_stop")
    assert ("u2", "started") not in ran(pool)[-1:]
    assert lrm.quiet == set()


# -- no status write unless something changed (actors/env.py) ---------------------------------


class CountingStore(DirStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writes: list[str] = []

    def write(self, name: str, data: bytes, expect_version: str | None = None) -> str:
        self.writes.append(name)
        return super().write(name, data, expect_version)


def ctx(store: DirStore, seen: list[object]) -> NodeContext:
    return NodeContext(
        node="n1", nodes=["n1", "n2", "n3"], store=store, membership=Quorate(), watchdog=NoWatchdog(),
        plugins={}, lease_ttl=5.0, holder="n1#a", on_lrm_status=seen.append, on_manager_status=seen.append,
    )  # fmt: skip


def test_lrm_status_is_written_on_change_only(tmp_path: Path) -> None:
    store, seen = CountingStore(tmp_path), list[object]()
    env = LiveEnv(ctx(store, seen), "lrm")
    results = {"u1": LrmResult("vm:100", "started", 0)}
    for i in range(10):
        env.write_lrm_status(LrmStatus("active", "active", 1000.0 + i, dict(results)))
    assert store.writes == [rec.lrm_status_name("n1")]
    assert len(seen) == 1
    results["u2"] = LrmResult("vm:100", "started", 0)
    env.write_lrm_status(LrmStatus("active", "active", 2000.0, dict(results)))
    assert len(store.writes) == 2  # a change: at once
    time.sleep(0.6)
    env.write_lrm_status(LrmStatus("active", "active", 3000.0, dict(results)))
    assert len(store.writes) == 2  # unchanged: never written again for its timestamp (issue #17)
    assert rec.read_lrm_status(store, "n1").timestamp == 2000.0


def test_manager_status_is_written_on_change_and_never_over_someone_elses(tmp_path: Path) -> None:
    store, seen = CountingStore(tmp_path), list[object]()
    env = LiveEnv(ctx(store, seen), "crm")
    assert env.get_ha_manager_lock()
    ms = env.read_manager_status()
    ms.master_node = "n1"
    ms.service_status = {"vm:100": ServiceData("started", "n1", "u1")}
    for i in range(10):
        ms.timestamp = 1000.0 + i
        env.write_manager_status(ms)
    assert store.writes.count(rec.MANAGER_STATUS) == 1
    assert len(seen) == 1
    ms.service_status["vm:100"].uid = "u2"
    env.write_manager_status(ms)
    assert store.writes.count(rec.MANAGER_STATUS) == 2
    time.sleep(0.6)
    ms.timestamp = 5000.0
    env.write_manager_status(ms)
    assert store.writes.count(rec.MANAGER_STATUS) == 2  # unchanged: not written for its timestamp
    assert rec.read_manager_status(store)[0].timestamp == 1009.0
    other = ManagerStatus(master_node="n2", service_status={"vm:100": ServiceData("started", "n2", "x")})
    store.write(rec.MANAGER_STATUS, json.dumps(other.to_dict()).encode())  # somebody else's write
    ms.timestamp = 6000.0
    with pytest.raises(LockLost):
        env.write_manager_status(ms)  # SAFETY: unchanged content does not hide a foreign write


# -- the store watcher sleeps until the journal moves (store/inotify.py) ------------------------


def test_dir_watch_wakes_on_a_store_write_and_sleeps_otherwise(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    watch = DirWatch.open(tmp_path / INTERNAL)
    assert watch is not None, "inotify not available"
    try:
        t0 = time.monotonic()
        assert not watch.wait(0.3)  # nothing written: sleeps the whole timeout
        assert time.monotonic() - t0 >= 0.25
        store.read(rec.MANAGER_STATUS)
        store.changed_since(None)  # reads do not wake it
        assert not watch.wait(0.1)
        threading.Timer(0.2, lambda: store.write("resources.cfg", b"x")).start()
        t0 = time.monotonic()
        assert watch.wait(5.0)
        assert time.monotonic() - t0 < 2.0
        while watch.wait(0.2):  # the rest of that write's events, if any
            pass
        assert store.acquire_lease(rec.MANAGER_LEASE, "n1#a", 5.0)  # leases are not in the journal
        assert not watch.wait(0.1)
    finally:
        watch.close()


def test_a_recheck_round_is_written_once() -> None:
    sids = [f"vm:{i}" for i in range(1, 4)]
    conf = ServiceConfig({s: ResourceConfig(sid=s, type="vm", name=s[3:], node="node1") for s in sids})
    env = PoolEnv(ManagerStatus(node_status={"node1": "online"}), conf)
    pool, clock = FakePool(), Clock()
    lrm = PacedLRM(env, pool, REFERENCE_TIMING, 10.0, clock)

    def request(tag: str) -> None:
        env.ms = ManagerStatus(
            node_status={"node1": "online"},
            service_status={s: ServiceData("started", "node1", f"{tag}{s}") for s in sids},
        )

    request("a")
    lrm.do_one_iteration()
    for s in sids:
        pool.finished.append((s, 0))
    lrm.do_one_iteration()
    request("b")  # the master's re-checks
    clock.now += 10.0
    lrm.do_one_iteration()
    assert len([j for j in pool.started if j.uid and j.uid.startswith("b")]) == 3
    before = len(env.written)
    for s in sids[:2]:  # two answers come in, the third is still running
        pool.finished.append((s, 0))
        clock.now += 0.1
        lrm.do_one_iteration()
    assert len(env.written) == before  # held back
    pool.finished.append((sids[2], 0))
    clock.now += 0.1
    lrm.do_one_iteration()
    assert len(env.written) == before + 1
    # the answers are successful re-checks: kept, not published (the first starts' are pruned)
    assert env.written[-1].results == {}
    assert sorted(lrm.results) == [f"b{s}" for s in sids]


def test_a_failed_recheck_is_written_at_once() -> None:
    env, pool, lrm, clock = paced(10.0)
    env.conf.services["vm:200"] = ResourceConfig(sid="vm:200", type="vm", name="200", node="node1")
    env.conf.services["vm:100"].max_restart = 0  # a failed start is a result at once, no retry

    def request(tag: str) -> None:
        env.ms = ManagerStatus(
            node_status={"node1": "online"},
            service_status={s: ServiceData("started", "node1", f"{tag}{s}") for s in ("vm:100", "vm:200")},
        )

    request("a")
    lrm.do_one_iteration()
    pool.finished.extend([("vm:100", 0), ("vm:200", 0)])
    lrm.do_one_iteration()
    request("b")
    clock.now += 10.0
    lrm.do_one_iteration()
    before = len(env.written)
    pool.finished.append(("vm:100", 1 << 8))  # found dead, could not start it
    clock.now += 0.1
    lrm.do_one_iteration()
    assert len(env.written) == before + 1
    assert env.written[-1].results["bvm:100"].exit_code == 1


# -- the LRM parses only its node's services (issue #15: every LRM reads manager_status) ------------


def test_the_lrm_reads_only_the_services_on_or_moving_to_its_node(tmp_path: Path) -> None:
    from actors.metrics import NodeMetrics  # noqa: PLC0415

    store = DirStore(tmp_path)
    ms = ManagerStatus(
        master_node="n2",
        node_status={"n1": "online", "n2": "online", "n3": "online"},
        service_status={
            "vm:1": ServiceData("started", "n1", "a"),
            "vm:2": ServiceData("started", "n2", "b"),
            "vm:3": ServiceData("migrate", "n3", "c", target="n1"),
            "vm:4": ServiceData("migrate", "n1", "d", target="n2"),
            "vm:5": ServiceData("fence", "n3", "e"),
        },
    )
    store.write(rec.MANAGER_STATUS, json.dumps(ms.to_dict()).encode())
    c = ctx(store, [])
    c.metrics = NodeMetrics("n1", "c")
    env = LiveEnv(c, "lrm")
    got = env.read_manager_status()
    assert sorted(got.service_status) == ["vm:1", "vm:3", "vm:4"]
    assert got.master_node == "n2" and got.node_status == ms.node_status
    states, here, _, master = c.metrics._view.status or ({}, {}, {}, None)
    assert states == {"started": 2, "migrate": 2, "fence": 1} and master == "n2"  # the whole cluster
    assert here == {"started": 1, "migrate": 1}  # on this node
    # the master (and everything else) still parses all of it
    assert sorted(rec.read_manager_status(store)[0].service_status) == [f"vm:{i}" for i in range(1, 6)]
