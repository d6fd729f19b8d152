"""The node daemon's guard over ha-watchdog (actors/watchdog.py SocketDriver), on a real UNIX socket."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.watchdog import GUARD_MAX_SLEEP, GUARD_MIN_SLEEP, MIRROR_GRACE, SocketDriver


class FakeWatchdog:
    """The server side of the watchdog socket, driven by the test."""

    def __init__(self, path: Path) -> None:
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(str(path))
        self.srv.listen(1)
        self.conn: socket.socket | None = None

    def accept(self) -> socket.socket:
        self.conn, _ = self.srv.accept()
        return self.conn

    def close(self) -> None:
        for s in (self.conn, self.srv):
            if s is not None:
                s.close()


@pytest.fixture
def link(tmp_path: Path) -> Iterator[tuple[FakeWatchdog, list[tuple[float, str]], float]]:
    wd = FakeWatchdog(tmp_path / "wd.sock")
    lost: list[tuple[float, str]] = []
    yield wd, lost, time.monotonic()
    wd.close()


def connect(path: Path, lost: list[tuple[float, str]], guard: float = 0.4) -> SocketDriver:
    return SocketDriver(
        path,
        lambda why: lost.append((time.monotonic(), why)),
        guard_timeout=guard,
        watchdog_timeout=1.0,
        clock=time.monotonic,
    )


Link = tuple[FakeWatchdog, list[tuple[float, str]], float]


def offline(tmp_path: Path, link: Link, guard: float) -> SocketDriver:
    """A driver whose guard thread has ended: its pure parts (check, next_check_in) alone."""
    wd, lost, _ = link
    drv = connect(tmp_path / "wd.sock", lost, guard=guard)
    wd.accept()
    drv.close()
    return drv


def wait(pred: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return bool(pred())  # type: ignore[operator]


def test_a_talking_watchdog_keeps_the_guard_quiet(tmp_path: Path, link) -> None:  # type: ignore[no-untyped-def]
    wd, lost, _ = link
    drv = connect(tmp_path / "wd.sock", lost)
    conn = wd.accept()
    stop = threading.Event()

    def talk() -> None:
        while not stop.is_set():
            conn.send(b"a" if drv.armed_since is not None else b"d")
            time.sleep(0.05)

    t = threading.Thread(target=talk)
    t.start()
    try:
        for _ in range(10):
            drv.pet()
            time.sleep(0.1)
        assert lost == []
        assert drv.confirmed
    finally:
        stop.set()
        t.join()
        drv.close()


def test_watchdog_death_is_noticed_at_once(tmp_path: Path, link) -> None:  # type: ignore[no-untyped-def]
    wd, lost, _ = link
    drv = connect(tmp_path / "wd.sock", lost, guard=5.0)
    conn = wd.accept()
    conn.send(b"d")
    t0 = time.monotonic()
    conn.close()  # what the kernel does when ha-watchdog is SIGKILLed
    assert wait(lambda: lost, 1.0)
    assert lost[0][0] - t0 < 0.3 and "closed the connection" in lost[0][1]
    drv.close()


def test_silence_fences_after_the_guard_timeout(tmp_path: Path, link) -> None:  # type: ignore[no-untyped-def]
    wd, lost, _ = link
    drv = connect(tmp_path / "wd.sock", lost, guard=0.4)
    conn = wd.accept()
    conn.send(b"d")
    t0 = time.monotonic()  # from here on the watchdog says nothing (SIGSTOPped)
    assert wait(lambda: lost, 2.0)
    took = lost[0][0] - t0
    assert 0.35 <= took < 1.0 and "no sign of life" in lost[0][1]
    drv.close()


def test_unconfirmed_arming_fences(tmp_path: Path, link) -> None:  # type: ignore[no-untyped-def]
    wd, lost, _ = link
    drv = connect(tmp_path / "wd.sock", lost, guard=0.4)
    conn = wd.accept()
    drv.pet()
    for _ in range(10):  # alive, but it keeps saying "disarmed" after our pets
        conn.send(b"d")
        time.sleep(0.05)
    assert lost and "not confirmed being armed" in lost[0][1]
    drv.close()


def test_orderly_close_is_not_a_loss(tmp_path: Path, link) -> None:  # type: ignore[no-untyped-def]
    wd, lost, _ = link
    drv = connect(tmp_path / "wd.sock", lost, guard=0.4)
    conn = wd.accept()
    conn.send(b"d")
    drv.close()
    conn.close()
    time.sleep(0.6)
    assert lost == []


def test_check_mirrors_the_watchdog_deadline(tmp_path: Path, link) -> None:  # type: ignore[no-untyped-def]
    """Pets stopped (no quorum): if the watchdog has not killed us by its deadline, it failed."""
    drv = offline(tmp_path, link, guard=100.0)  # only check() is exercised below
    now = 1000.0
    drv.last_status = now
    drv.remote_armed = True
    drv.armed_since = drv.last_pet = now  # the last pet; watchdog_timeout is 1.0
    assert drv.check(now + 1.0 + MIRROR_GRACE - 0.05) is None
    why = drv.check(now + 1.0 + MIRROR_GRACE + 0.05)
    assert why is not None and "did not fire" in why


def test_the_guard_sleeps_until_its_next_deadline(tmp_path: Path, link) -> None:  # type: ignore[no-untyped-def]
    """No polling (issue #17): the guard wakes on a status byte or a little after its next deadline."""
    drv = offline(tmp_path, link, guard=4.0)  # only next_check_in() is exercised below
    now = 1000.0
    drv.last_status, drv.remote_armed, drv.armed_since, drv.last_pet = now, False, None, None
    assert drv.next_check_in(now) == GUARD_MAX_SLEEP  # silence deadline 4 s away: the longest sleep
    assert drv.next_check_in(now + 3.9) == pytest.approx(0.1 + GUARD_MIN_SLEEP)
    assert drv.next_check_in(now + 4.5) == GUARD_MIN_SLEEP  # overdue: look at once
    drv.armed_since = drv.last_pet = now + 3.0  # a first pet: unconfirmed until 7.0, mirror at 4.25
    drv.last_status = now + 3.8
    assert drv.next_check_in(now + 3.9) == pytest.approx(1.0 + MIRROR_GRACE - 0.9 + GUARD_MIN_SLEEP)
    # a short guard_timeout: never sleep more than half of it
    drv.guard_timeout = 0.4
    drv.armed_since = drv.last_pet = None
    assert drv.next_check_in(now + 3.8) == pytest.approx(0.2)


def test_the_mirror_deadline_is_kept_without_any_byte(tmp_path: Path, link) -> None:  # type: ignore[no-untyped-def]
    """Pets stopped and the watchdog silent (but within the guard timeout): fenced at the mirror deadline."""
    wd, lost, _ = link
    drv = connect(tmp_path / "wd.sock", lost, guard=30.0)
    conn = wd.accept()
    drv.pet()
    t0 = time.monotonic()
    conn.send(b"a")
    assert wait(lambda: lost, 3.0)
    took = lost[0][0] - t0
    # watchdog_timeout 1.0 + MIRROR_GRACE, not rounded up to a polling step or the longest sleep
    assert 1.0 + MIRROR_GRACE - 0.02 <= took < 1.0 + MIRROR_GRACE + 0.2, took
    assert "did not fire" in lost[0][1]
    drv.close()
