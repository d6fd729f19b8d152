"""What the CRM and LRM daemons share (BEHAVIOUR.md §3): state changes, the loop hooks,
and the watchdog they hold while they may act."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ha.constants import LOCK_MAX_TRIES, REFERENCE_TIMING, Timing
from ha.env import Env
from ha.states import check_transition


def lock_with_retries(env: Env, get_lock: Callable[[], bool], max_seconds: float) -> bool:
    """Try a lock up to 6 times, 1 s apart, for at most 5 s (§3.1.3, §3.2.3)."""
    start = env.get_time()
    tries = 0
    while True:
        if get_lock():
            return True
        tries += 1
        if tries >= LOCK_MAX_TRIES:
            return False
        if env.get_time() - start > max_seconds:
            return False
        env.sleep(1)


class Daemon:
    """Base of :class:`ha.crm.CRM` and :class:`ha.lrm.LRM`."""

    TRANSITIONS: Mapping[Any, frozenset[Any]] = {}
    WHAT = "daemon state"

    def __init__(self, env: Env, timing: Timing = REFERENCE_TIMING) -> None:
        self.env = env
        self.timing = timing
        self.state: str = "startup"
        self.state_change_time: float = env.get_time()
        self.watchdog: str | None = None
        self.cluster_state_update_ok = False

    def change_state(self, new: str) -> bool:
        """The one place a daemon state changes: validate, log ``status change``, timestamp."""
        if new == self.state:
            return False
        check_transition(self.TRANSITIONS, self.state, new, self.WHAT)
        self.env.log("info", f"status change {self.state} => {new}")
        self.state = new
        self.state_change_time = self.env.get_time()
        return True

    def renew_watchdog(self) -> None:
        """After a successful lock renewal: update the watchdog, or open one."""
        if self.watchdog is not None:
            self.env.watchdog_update(self.watchdog)
        else:
            self.watchdog = self.env.watchdog_open()

    def give_up_watchdog(self) -> None:
        """Only where it is safe (§3.1.5, §3.2.7): nothing left to protect."""
        if self.watchdog is not None:
            self.env.watchdog_close(self.watchdog)
            self.watchdog = None

    def do_one_iteration(self) -> bool:
        """Run one loop iteration; False means the daemon exits."""
        env = self.env
        env.loop_start_hook()
        self.cluster_state_update_ok = env.cluster_state_update()
        res = self.work()
        env.loop_end_hook()
        return res

    def work(self) -> bool:
        raise NotImplementedError
