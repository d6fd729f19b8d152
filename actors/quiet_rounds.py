"""Skip the master rounds that cannot change anything (issue #17, ours).

The live master iterates every ``renew_interval`` (0.5 s) to renew its lease;
the reference runs a manager round every 10 s. A round over thousands of
services costs tens of milliseconds, and at rest every one of them finds
nothing to do. A round is a function of what it reads: the store records
(config, commands, every node's lrm_status), the membership view, and, in
some states, the clock or a count of rounds. So a round may be skipped when

* the last round ran with the same inputs: no record written anywhere since
  it started (the store's change mark, :meth:`store.dirstore.DirStore.change_mark`;
  its own write moves the mark too, so the round after a write always runs),
  the same membership view and quorum;
* that round was *steady*: every node ``online``, no disarm, no scheduler that
  reads measured usage or counts rounds (``dynamic``, auto-rebalance, the group
  migration), so the clock and the round count change nothing;
* and the last full round is less than ``QUIET_ROUND_MAX`` seconds old.

SAFETY: a skipped round issues no command and writes nothing; it can only
delay a reaction, and any change of an input ends the skipping at once. A node
that goes down changes the membership view, which runs the next round as
before. A store without a change mark (etcd today) never skips.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from ha.env import NodeInfo
from ha.manager import Manager
from ha.states import NodeState

QUIET_ROUND_MAX = 5.0  # s: a full round at least this often, whatever the gate says
_CLOCK_FREE_CRS = frozenset({"basic", "static"})


class QuietRounds:
    """Wraps one Manager's ``manage()``: runs it, or skips it when it cannot change anything."""

    def __init__(
        self,
        store: Any,
        clock: Callable[[], float] = time.monotonic,
        max_gap: float = QUIET_ROUND_MAX,
    ) -> None:
        self._mark: Callable[[], object] | None = getattr(store, "change_mark", None)
        self.clock = clock
        self.max_gap = max_gap
        self._steady_inputs: object | None = None  # inputs of the last round, if it was steady
        self._last_full = -float("inf")
        self.skipped = 0

    def wrap(self, manager: Manager, manage: Callable[[], None]) -> Callable[[], None]:
        """Gate a new term's Manager (what an earlier term saw counts for nothing)."""
        self._steady_inputs = None

        def gated() -> None:
            now = self.clock()
            info, quorate = manager.env.get_node_info()
            inputs = self._inputs(info, quorate)
            if inputs is not None and inputs == self._steady_inputs and now - self._last_full < self.max_gap:
                self.skipped += 1
                # the one thing a steady round still changes: when each node was last seen
                # online (the fence delay counts from it, §6.2)
                manager.ns.update(info, manager.lrm_modes)
                return
            self._steady_inputs = None  # until this round ends well and steady
            manage()
            self._last_full = now
            if inputs is not None and self._steady(manager):
                self._steady_inputs = inputs

        return gated

    def _inputs(self, info: Mapping[str, NodeInfo], quorate: bool) -> object | None:
        """What a round reads besides the clock, as one comparable value (None: unknown)."""
        if self._mark is None:
            return None
        mark = self._mark()
        if mark is None:
            return None
        return mark, quorate, tuple(sorted((n, i.online) for n, i in info.items()))

    @staticmethod
    def _steady(manager: Manager) -> bool:
        """Would the same inputs give the same round later? (No clock, no round count.)"""
        env = manager.env
        if manager.ms.disarm is not None or env.migrate_groups:
            return False
        if manager.crs_mode not in _CLOCK_FREE_CRS or manager.crs.auto_rebalance:
            return False
        info, quorate = env.get_node_info()
        if not quorate or not all(i.online for i in info.values()):
            return False
        return bool(manager.ns.status) and all(s == NodeState.ONLINE for s in manager.ns.status.values())
