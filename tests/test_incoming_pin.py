"""A live migration's target holds its agent lease and watchdog while the guest comes in.

Found in review: the target's QEMU runs the guest before the master counts the
service on that node. An idle target LRM held no lease then, so the master could
have fenced that node "at once" (its lock free) and recovered the guest elsewhere
while it still ran there. Now ``vm_incoming listen`` pins the service
(``NodeContext.incoming``), the LRM goes active for it (actors/lrm.py
``PacedLRM._pinned``), and ``listen`` / ``resume`` refuse without an active LRM
(actors/peer.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from actors import peer
from actors.lrm import PacedLRM
from actors.peer import VmIncoming
from admin.errors import AdminError, ExitCode
from ha.config.resources import ServiceConfig
from ha.constants import REFERENCE_TIMING
from ha.records import ManagerStatus, ServiceData
from ha.states import LrmState
from store.dirstore import DirStore
from tests import envstubs
from tests.test_lrm_pool import FakePool, PoolEnv


def status(sd: ServiceData) -> ManagerStatus:
    return ManagerStatus(node_status={"node1": "online", "node2": "online"}, service_status={"vm:100": sd})


def idle_lrm(incoming: dict[str, float]) -> tuple[PoolEnv, PacedLRM]:
    # the LRM has not read the manager_status of the migration yet (it counts a migration's
    # target as active, §3.2.2, but reads the record only at its next tick)
    ms = status(ServiceData("started", "node2", "u1"))
    env = PoolEnv(ms, ServiceConfig({}))
    lrm = PacedLRM(env, FakePool(), REFERENCE_TIMING, 10.0, incoming=incoming)
    return env, lrm


def test_a_pinned_guest_makes_an_idle_lrm_take_its_lease_and_keep_it() -> None:
    incoming: dict[str, float] = {}
    env, lrm = idle_lrm(incoming)
    for _ in range(3):
        lrm.do_one_iteration()
    assert lrm.state == LrmState.WAIT_FOR_AGENT_LOCK  # nothing of its own: idle, no lease
    incoming["vm:100"] = time.monotonic() + 60
    lrm.do_one_iteration()
    assert lrm.state == LrmState.ACTIVE  # SAFETY: the lease and watchdog before the guest runs here
    for _ in range(REFERENCE_TIMING.lrm_max_idle_rounds + 3):
        lrm.do_one_iteration()
    assert lrm.state == LrmState.ACTIVE  # not "idle" while the guest is coming in
    env.ms = status(ServiceData("migrate", "node2", "u2", target="node1"))
    lrm.do_one_iteration()
    assert "vm:100" in incoming and lrm.state == LrmState.ACTIVE
    # the master places the service here: the pin ends, the core's own count holds the lease
    env.ms = status(ServiceData("started", "node1", "u3"))
    lrm.do_one_iteration()
    assert incoming == {} and lrm.state == LrmState.ACTIVE


def test_an_expired_pin_lets_the_lrm_go_idle() -> None:
    incoming = {"vm:100": time.monotonic() + 60}
    _, lrm = idle_lrm(incoming)
    lrm.do_one_iteration()
    assert lrm.state == LrmState.ACTIVE
    incoming["vm:100"] = time.monotonic() - 1  # the incoming QEMU was reaped, the migration abandoned
    for _ in range(REFERENCE_TIMING.lrm_max_idle_rounds + 3):
        lrm.do_one_iteration()
    assert incoming == {} and lrm.state == LrmState.WAIT_FOR_AGENT_LOCK


def test_listen_waits_for_an_active_lrm_and_refuses_without_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peer, "LRM_ACTIVE_WAIT", 0.3)
    ctx = envstubs.context(DirStore(tmp_path))
    woken: list[str] = []
    vi = VmIncoming(ctx, "127.0.0.1", wake_lrm=lambda: woken.append("lrm"))
    with pytest.raises(AdminError) as err:
        vi._arm("vm:100", 60.0)
    assert err.value.code == ExitCode.REFUSED and "no agent lease" in str(err.value)
    assert woken == ["lrm"] and ctx.incoming == {}  # the pin is taken back

    # an LRM that goes active when woken (as the node's does within an iteration)
    vi = VmIncoming(ctx, "127.0.0.1", wake_lrm=ctx.lrm_active.set)
    vi._arm("vm:100", 60.0)
    assert "vm:100" in ctx.incoming
