"""A supervised actor that stops is started again (issue #10: actors never die silently)."""

from __future__ import annotations

import pykka

from actors.supervise import Supervised


class Fragile(pykka.ThreadingActor):
    def on_receive(self, message: object) -> object:
        if message == "die":
            raise RuntimeError("a bug")
        return "pong"


def test_a_dead_actor_is_restarted_and_answers_again() -> None:
    sup = Supervised("fragile", Fragile.start)
    try:
        first = sup.ref
        assert not sup.check(), "nothing to do while it lives"
        first.tell("die")
        first.actor_stopped.wait(5)
        assert not first.is_alive()
        assert sup.check() and sup.restarts == 1
        assert sup.ref is not first and sup.ref.ask("ping", timeout=5) == "pong"
    finally:
        sup.ref.stop()


def test_a_failing_restart_is_tried_again_on_the_next_check() -> None:
    starts = {"n": 0}

    def start() -> pykka.ActorRef[Fragile]:
        starts["n"] += 1
        if starts["n"] == 2:
            raise OSError("port in use")
        return Fragile.start()

    sup = Supervised("fragile", start)
    try:
        sup.ref.stop()
        assert not sup.check() and sup.restarts == 0
        assert sup.check() and sup.ref.ask("ping", timeout=5) == "pong"
    finally:
        sup.ref.stop()
