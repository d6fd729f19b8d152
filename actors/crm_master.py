"""The CRM actor: the core CRM, master while it holds the manager lease.

It iterates on a timer (lease renewal every ``renew_interval``) and on events
(a result, a node change, a command); while master, each iteration runs a
Manager round, which writes ``manager_status`` first; the node runtime then
sends the changed commands to the LRMs (``announce``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from actors.daemon import DaemonActor, Exited, TickGate, Waker
from actors.metrics import NodeMetrics
from actors.quiet_rounds import QuietRounds
from ha.constants import Timing
from ha.crm import CRM
from ha.env import Env
from ha.manager import Manager
from ha.states import CrmState

# s: the longest a slave CRM lets timer ticks pass while the manager lease is held by another
SLAVE_MAX_PAUSE = 2.0


class CrmActor(DaemonActor):
    """The CRM daemon on its actor thread.

    A slave (issue #17, ours) can only become master once the manager lease is free:
    it does not try on every tick but at the lease's expiry, at the latest every
    ``SLAVE_MAX_PAUSE`` seconds (a master that released the lease in an orderly way is
    replaced within that), and at once on any event (a peer up or down, quorum, a
    command). A dead master's lease is taken as soon as it expires, as before.
    """

    name = "crm"

    def __init__(
        self,
        node: str,
        env: Env,
        timing: Timing,
        on_exit: Callable[[Exited], None],
        waker: Waker | None = None,
        metrics: NodeMetrics | None = None,
        quiet: QuietRounds | None = None,
        lease_left: Callable[[], float | None] | None = None,
        gate: TickGate | None = None,
    ) -> None:
        super().__init__(node, on_exit, waker)
        self.crm = CRM(env, timing)
        self.metrics = metrics
        self.quiet = quiet  # skips the rounds that cannot change anything (actors/quiet_rounds.py)
        self._wrapped: Manager | None = None  # the Manager whose rounds are timed and gated
        # seconds another holder's manager lease still runs (None: free, ours, or unknown)
        self.lease_left = lease_left
        # until when timer ticks are not needed (the node's ticker does not send them)
        self.gate = gate if gate is not None else TickGate()
        self.gate.not_before = -math.inf

    def tick_due(self) -> bool:
        return self.gate.due(time.monotonic())

    def iterate(self) -> bool:
        more = self.crm.do_one_iteration()
        pause_until = -math.inf
        if self.crm.state == CrmState.SLAVE and self.lease_left is not None:
            left = self.lease_left()
            if left is not None:
                pause_until = time.monotonic() + min(SLAVE_MAX_PAUSE, left)
        self.gate.not_before = pause_until
        if self.metrics is not None:
            self.metrics.master.set(1 if self.crm.state == CrmState.MASTER else 0)
        # a new term's Manager (its first round ran untimed and ungated, in the iteration that made it)
        if self.crm.manager is not None and self.crm.manager is not self._wrapped:
            self._wrap_rounds(self.crm.manager)
        return more

    def _wrap_rounds(self, manager: Manager) -> None:
        """Time each ``Manager.manage()`` of this term's Manager (``pyha_manager_round_seconds``)
        and skip the ones that cannot change anything (:class:`QuietRounds`)."""
        inner = manager.manage
        metrics = self.metrics
        manage = inner
        if metrics is not None:

            def timed() -> None:
                t0 = time.perf_counter()
                try:
                    inner()
                finally:
                    metrics.manager_round.observe(time.perf_counter() - t0)

            manage = timed
        if self.quiet is not None:
            manage = self.quiet.wrap(manager, manage)
        manager.manage = manage  # type: ignore[method-assign]
        self._wrapped = manager

    def shutdown(self) -> None:
        self.crm.request_shutdown()

    def handle(self, message: object) -> object:
        if message == "state":
            return self.crm.state
        if message == "is_master":
            return self.crm.state == CrmState.MASTER
        return None
