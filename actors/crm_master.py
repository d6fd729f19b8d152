"""The CRM actor: the core CRM, master while it holds the manager lease.

It iterates on a timer (lease renewal every ``renew_interval``) and on events
(a result, a node change, a command); while master, each iteration runs a
Manager round, which writes ``manager_status`` first; the node runtime then
sends the changed commands to the LRMs (``announce``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from actors.daemon import DaemonActor, Exited, Waker
from actors.metrics import NodeMetrics
from ha.constants import Timing
from ha.crm import CRM
from ha.env import Env
from ha.manager import Manager
from ha.states import CrmState


class CrmActor(DaemonActor):
    name = "crm"

    def __init__(
        self,
        node: str,
        env: Env,
        timing: Timing,
        on_exit: Callable[[Exited], None],
        waker: Waker | None = None,
        metrics: NodeMetrics | None = None,
    ) -> None:
        super().__init__(node, on_exit, waker)
        self.crm = CRM(env, timing)
        self.metrics = metrics
        self._timed: Manager | None = None  # the Manager whose rounds are timed

    def iterate(self) -> bool:
        more = self.crm.do_one_iteration()
        if self.metrics is not None:
            self.metrics.master.set(1 if self.crm.state == CrmState.MASTER else 0)
        # a new term's Manager (its first round ran untimed, in the iteration that made it)
        if self.metrics is not None and self.crm.manager is not None and self.crm.manager is not self._timed:
            self._time_rounds(self.crm.manager, self.metrics)
        return more

    def _time_rounds(self, manager: Manager, metrics: NodeMetrics) -> None:
        """``pyha_manager_round_seconds``: time each ``Manager.manage()`` of this term's Manager."""
        manage = manager.manage

        def timed() -> None:
            t0 = time.perf_counter()
            try:
                manage()
            finally:
                metrics.manager_round.observe(time.perf_counter() - t0)

        manager.manage = timed  # type: ignore[method-assign]
        self._timed = manager

    def shutdown(self) -> None:
        self.crm.request_shutdown()

    def handle(self, message: object) -> object:
        if message == "state":
            return self.crm.state
        if message == "is_master":
            return self.crm.state == CrmState.MASTER
        return None
