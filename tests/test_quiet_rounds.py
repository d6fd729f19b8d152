"""A master at rest skips the rounds that cannot change anything (actors/quiet_rounds.py, issue #17)."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors import crm_master
from actors.crm_master import CrmActor
from actors.daemon import Tick, TickGate, Wake
from actors.metrics import NodeMetrics
from actors.quiet_rounds import QUIET_ROUND_MAX, QuietRounds
from ha.constants import Timing
from ha.crm import CRM
from ha.records import LrmResult, LrmStatus, ManagerStatus
from ha.states import CrmState
from store import records as rec
from store.dirstore import DirStore
from tests import envstubs
from tests.envstubs import Clock


class Membership:
    """A bus view the test changes: who is up, and whether we have the majority."""

    def __init__(self) -> None:
        self.up = frozenset(envstubs.NODES)
        self.majority = True

    def quorate(self) -> bool:
        return self.majority

    def peers_up(self) -> frozenset[str]:
        return self.up


def seed(store: DirStore, ms: ManagerStatus | None = None) -> None:
    """One service, proc:a on n1, and a manager status (an empty one unless given)."""
    rec.write_manager_status(store, ms or ManagerStatus())
    store.write(rec.RESOURCES_CFG, b"proc: a\n\tcmd sleep 9\n\tnode n1\n")


class Master:
    def __init__(self, store: DirStore) -> None:
        seed(store)
        self.store, self.clock, self.membership = store, Clock(), Membership()
        ctx = envstubs.context(store, holder="n1#q")
        ctx.membership = self.membership
        self.crm = CRM(envstubs.LiveEnv(ctx, "crm"), Timing(crm_loop=0.0))
        for _ in range(5):
            self.crm.do_one_iteration()
            if self.crm.state == CrmState.MASTER and self.crm.manager is not None:
                break
        manager = self.crm.manager
        assert self.crm.state == CrmState.MASTER and manager is not None
        self.gate = QuietRounds(store, clock=self.clock)
        self.rounds = 0
        inner = manager.manage

        def counted() -> None:
            self.rounds += 1
            inner()

        manager.manage = self.gate.wrap(manager, counted)  # type: ignore[method-assign]

    def iterate(self, n: int = 1) -> int:
        """Rounds that ran in ``n`` iterations, half a second apart."""
        before = self.rounds
        for _ in range(n):
            self.crm.do_one_iteration()
            self.clock.now += 0.5
        return self.rounds - before

    def settle(self) -> None:
        self.iterate(4)
        assert self.iterate(4) == 0, "a master at rest still runs rounds"


def test_rounds_stop_once_nothing_changes_and_run_again_at_a_store_write(tmp_path: Path) -> None:
    m = Master(DirStore(tmp_path))
    m.settle()
    ms = rec.read_manager_status(m.store)[0]
    uid = ms.service_status["proc:a"].uid
    assert uid is not None
    # the LRM answers: a store write, the next round takes it in
    done = LrmStatus("active", "active", 1.0, {uid: LrmResult("proc:a", "started", 0)})
    rec.write_lrm_status(m.store, "n1", done)
    assert m.iterate() == 1
    assert rec.read_manager_status(m.store)[0].service_status["proc:a"].uid != uid  # answered: a new UID
    m.settle()
    rec.queue_crm_command(m.store, "migrate proc:a n2")  # an administrator's command
    assert m.iterate() == 1
    assert rec.read_manager_status(m.store)[0].service_status["proc:a"].state == "migrate"


def test_a_node_going_down_runs_the_next_round_and_every_round_after(tmp_path: Path) -> None:
    m = Master(DirStore(tmp_path))
    m.settle()
    m.membership.up = frozenset({"n1", "n2"})
    assert m.iterate() == 1
    assert rec.read_manager_status(m.store)[0].node_status["n3"] == "unknown"
    # not steady (a node is not online: the fence delay counts on the clock): no skipping
    assert m.iterate(6) == 6


def test_a_full_round_runs_at_least_every_quiet_round_max(tmp_path: Path) -> None:
    m = Master(DirStore(tmp_path))
    m.settle()
    assert m.iterate(int(QUIET_ROUND_MAX / 0.5) + 1) == 1
    assert m.gate.skipped > 0


def test_skipped_rounds_keep_the_nodes_last_seen_online(tmp_path: Path) -> None:
    # the fence delay counts from the last round that saw a node online: a skipped round must
    # not make a short blip look like a long outage
    m = Master(DirStore(tmp_path))
    m.settle()
    m.iterate(6)
    manager = m.crm.manager
    assert manager is not None
    now = manager.env.get_time()
    assert all(now - seen < 1.0 for seen in manager.ns.last_online.values())


def test_a_store_without_a_change_mark_never_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DirStore, "change_mark", None)
    m = Master(DirStore(tmp_path))
    assert m.iterate(8) == 8


def test_the_crm_actor_times_the_rounds_it_runs_and_skips_the_quiet_ones(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    seed(store)
    metrics, gate = NodeMetrics("n1"), QuietRounds(store)
    env = envstubs.live_env(store, holder="n1#m")
    actor = CrmActor("n1", env, Timing(crm_loop=0.0), lambda e: None, metrics=metrics, quiet=gate)
    for _ in range(12):
        assert actor.iterate()
    assert actor.crm.state == CrmState.MASTER
    timed = metrics.registry.get_sample_value("pyha_manager_round_seconds_count")
    assert timed is not None and timed >= 1
    assert gate.skipped >= 5
    assert timed + gate.skipped == 12 - 1  # the term's first round runs before the wrapping


def test_a_slave_tries_for_the_lease_at_its_expiry_and_on_events_not_on_every_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(crm_master.time, "monotonic", clock)
    store = DirStore(tmp_path)
    seed(store, ManagerStatus(master_node="n2"))
    assert store.acquire_lease(rec.MANAGER_LEASE, "n2#other", 30.0)
    left: list[float | None] = [3.0]
    env = envstubs.live_env(store, holder="n1#s")
    gate = TickGate()
    actor = CrmActor("n1", env, Timing(crm_loop=0.0), lambda e: None, lease_left=lambda: left[0], gate=gate)
    tries = 0
    iterate = actor.crm.do_one_iteration

    def counted() -> bool:
        nonlocal tries
        tries += 1
        return iterate()

    actor.crm.do_one_iteration = counted  # type: ignore[method-assign]
    actor.on_receive(Tick())
    assert actor.crm.state == CrmState.SLAVE and tries == 1
    # the node's ticker reads the same gate: it sends none of the ticks the actor would drop
    assert not gate.due(clock.now + 1.5) and gate.due(clock.now + crm_master.SLAVE_MAX_PAUSE)
    for _ in range(3):
        clock.now += 0.5
        actor.on_receive(Tick())
    assert tries == 1  # the lease runs on: no try on these ticks
    actor.on_receive(Wake())
    assert tries == 2  # an event: at once
    clock.now += crm_master.SLAVE_MAX_PAUSE
    actor.on_receive(Tick())
    assert tries == 3  # at the latest every SLAVE_MAX_PAUSE
    left[0] = 0.3
    clock.now += crm_master.SLAVE_MAX_PAUSE
    actor.on_receive(Tick())
    assert tries == 4
    assert store.release_lease(rec.MANAGER_LEASE, "n2#other")
    left[0] = None
    clock.now += 0.3  # the expiry it was told: it tries, and takes the free lease
    actor.on_receive(Tick())
    assert tries == 5 and actor.crm.state == CrmState.MASTER
    assert gate.due(clock.now)  # a master wants every tick
    clock.now += 0.5
    actor.on_receive(Tick())
    assert tries == 6  # a master iterates on every tick (its lease, its rounds)
