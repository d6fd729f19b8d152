"""The WatchdogActor's pets: gated by quorum and by every client's updates, sent as soon as allowed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pykka
import pytest

from actors.env import LiveEnv
from actors.watchdog import MIN_PET_GAP, Close, Open, PetTick, Quorum, Update, WatchdogActor, WatchdogClient
from fence.clock import boottime
from store.dirstore import DirStore
from tests.envstubs import context


class FakeDriver:
    def __init__(self) -> None:
        self.pets = 0
        self.disarms = 0

    def pet(self) -> None:
        self.pets += 1

    def disarm(self) -> None:
        self.disarms += 1

    def close(self) -> None:
        pass


@pytest.fixture
def actor() -> Iterator[tuple[pykka.ActorRef[WatchdogActor], FakeDriver]]:
    drv = FakeDriver()
    ref = WatchdogActor.start("n1", drv, 0.3, True)
    yield ref, drv
    ref.stop()


def test_an_update_pets_at_once(actor) -> None:  # type: ignore[no-untyped-def]
    ref, drv = actor
    h = ref.ask(Open("lrm"))
    assert drv.pets == 1  # opening pets
    time.sleep(MIN_PET_GAP + 0.02)
    ref.ask(Update(h))
    assert drv.pets == 2  # not waiting for the next PetTick
    ref.ask(Update(h))  # again at once: one pet per MIN_PET_GAP is enough
    assert drv.pets == 2
    ref.ask(Close(h))
    assert drv.disarms == 1


def test_a_stale_client_stops_every_pet(actor) -> None:  # type: ignore[no-untyped-def]
    ref, drv = actor
    crm, lrm = ref.ask(Open("crm")), ref.ask(Open("lrm"))
    pets = drv.pets
    time.sleep(0.35)  # past client_timeout for both
    ref.ask(Update(lrm))  # the CRM did not update: no pet, neither now nor on a tick
    ref.ask(PetTick())
    assert drv.pets == pets
    ref.ask(Update(crm))  # both fresh again
    assert drv.pets == pets + 1


def test_without_quorum_an_update_does_not_pet(actor) -> None:  # type: ignore[no-untyped-def]
    ref, drv = actor
    h = ref.ask(Open("lrm"))
    ref.ask(Quorum(False))
    pets = drv.pets
    time.sleep(MIN_PET_GAP + 0.02)
    ref.ask(Update(h))
    ref.ask(PetTick())
    assert drv.pets == pets


def test_an_update_handled_late_counts_from_its_renewal_not_from_when_it_is_handled(actor) -> None:  # type: ignore[no-untyped-def]
    """SAFETY (docs/RUNTIME.md, step 1): a renewal that started at t counts until t + margin/2
    at most; an actor that gets to the update later (a busy host) must not stretch that."""
    ref, drv = actor
    h = ref.ask(Open("lrm", boottime()))
    pets = drv.pets
    time.sleep(MIN_PET_GAP + 0.02)
    ref.ask(Update(h, boottime() - 0.35))  # its renewal counted until 0.35 s ago: stale (0.3)
    ref.ask(PetTick())
    assert drv.pets == pets
    ref.ask(Update(h, boottime() + 1.0))  # a fresh renewal: it counts from now, as handled
    assert drv.pets == pets + 1


def test_an_update_told_for_an_unknown_handle_is_ignored_and_the_actor_lives_on(actor) -> None:  # type: ignore[no-untyped-def]
    ref, drv = actor
    WatchdogClient(ref).update("WD:n1:lrm:99")  # told: nobody would hear an exception
    h = ref.ask(Open("lrm"))
    assert ref.is_alive() and drv.pets == 1  # the unknown handle allowed no pet; Open did
    WatchdogClient(ref).update(h)
    ref.ask(PetTick())
    assert ref.is_alive()


class Recording:
    """The Env's watchdog port, recording what each open/update may count from."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float | None]] = []

    def open(self, client: str, at_most: float | None = None) -> str:
        self.calls.append(("open", at_most))
        return client

    def update(self, handle: str, at_most: float | None = None) -> None:
        self.calls.append(("update", at_most))

    def close(self, handle: str) -> None:
        pass


@pytest.mark.parametrize("daemon", ["lrm", "crm"])
def test_the_env_bounds_each_watchdog_update_by_its_own_leases_last_renewal(
    tmp_path: Path, daemon: str
) -> None:
    store = DirStore(tmp_path)
    ctx = context(store)
    ctx.watchdog = wd = Recording()
    env = LiveEnv(ctx, daemon)
    own = env.get_ha_manager_lock if daemon == "crm" else env.get_ha_agent_lock
    before = boottime()
    assert own()
    after = boottime()
    h = env.watchdog_open()
    assert env.get_ha_agent_lock("n2") if daemon == "crm" else True  # another lease (fencing) later
    env.watchdog_update(h)
    cap = ctx.renew_latency_cap
    for _, at_most in wd.calls:
        # from the own lease's renewal, never from a later call on another lease
        assert at_most is not None and before + cap <= at_most <= after + cap
    store.close()
