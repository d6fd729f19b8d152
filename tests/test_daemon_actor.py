"""Supervision of the daemon actors: failures are counted and reported, never silent."""

from __future__ import annotations

import threading

import pytest

from actors.daemon import MAX_CONSECUTIVE_FAILURES, DaemonActor, Exited, Shutdown, Tick, Waker


class Flaky(DaemonActor):
    name = "flaky"

    def __init__(
        self, fail: list[bool], exits: list[Exited], done: threading.Event, waker: Waker | None = None
    ) -> None:
        super().__init__("n1", self._exit, waker)
        self.fail = fail
        self.exits = exits
        self.done = done
        self.stopping = False
        self.iterations = 0

    def _exit(self, ev: Exited) -> None:
        self.exits.append(ev)
        self.done.set()

    def iterate(self) -> bool:
        self.iterations += 1
        if self.fail and self.fail.pop(0):
            raise RuntimeError("boom")
        return not self.stopping

    def shutdown(self) -> None:
        self.stopping = True

    def handle(self, message: object) -> object:
        return self.iterations if message == "iterations" else None


def test_isolated_failures_are_logged_and_survived() -> None:
    exits: list[Exited] = []
    ref = Flaky.start([True, False, True, False], exits, threading.Event())
    try:
        for _ in range(4):
            ref.tell(Tick())
        assert ref.ask("iterations", timeout=5) == 4
        assert exits == []
        assert ref.is_alive()
    finally:
        ref.stop()


def test_repeated_failures_take_the_daemon_down_with_a_reason() -> None:
    exits: list[Exited] = []
    done = threading.Event()
    ref = Flaky.start([True] * MAX_CONSECUTIVE_FAILURES, exits, done)
    try:
        for _ in range(MAX_CONSECUTIVE_FAILURES + 3):
            ref.tell(Tick())
        assert done.wait(5)
        assert len(exits) == 1 and exits[0].daemon == "flaky"
        assert exits[0].error is not None and "boom" in exits[0].error
        # after exiting it does not iterate any more
        assert ref.ask("iterations", timeout=5) is None
    finally:
        ref.stop()


def test_orderly_shutdown_reports_no_error() -> None:
    exits: list[Exited] = []
    done = threading.Event()
    ref = Flaky.start([], exits, done)
    try:
        ref.tell(Shutdown())
        assert done.wait(5)
        assert exits == [Exited("flaky", None)]
    finally:
        ref.stop()


def test_poke_coalesces_wakeups() -> None:
    exits: list[Exited] = []
    waker = Waker()
    ref = Flaky.start([], exits, threading.Event(), waker)
    try:
        for _ in range(50):
            waker.poke()
        n = ref.ask("iterations", timeout=5)
        assert isinstance(n, int) and 1 <= n < 50
    finally:
        ref.stop()


@pytest.mark.parametrize("n", [MAX_CONSECUTIVE_FAILURES - 1])
def test_counter_resets_after_a_success(n: int) -> None:
    exits: list[Exited] = []
    ref = Flaky.start([True] * n + [False] + [True] * n, exits, threading.Event())
    try:
        for _ in range(2 * n + 1):
            ref.tell(Tick())
        assert ref.ask("iterations", timeout=5) == 2 * n + 1
        assert exits == []
    finally:
        ref.stop()
