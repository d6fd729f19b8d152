"""The WatchdogActor's pets: gated by quorum and by every client's updates, sent as soon as allowed."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pykka
import pytest

from actors.watchdog import MIN_PET_GAP, Close, Open, PetTick, Quorum, Update, WatchdogActor


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
