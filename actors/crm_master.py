"""The CRM actor: the core CRM, master while it holds the manager lease.

It iterates on a timer (lease renewal every ``renew_interval``) and on events
(a result, a node change, a command); while master, each iteration runs a
Manager round, which writes ``manager_status`` first; the node runtime then
sends the changed commands to the LRMs (``announce``).
"""

from __future__ import annotations

from collections.abc import Callable

from actors.daemon import DaemonActor, Exited, Waker
from ha.constants import Timing
from ha.crm import CRM
from ha.env import Env
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
    ) -> None:
        super().__init__(node, on_exit, waker)
        self.crm = CRM(env, timing)

    def iterate(self) -> bool:
        return self.crm.do_one_iteration()

    def shutdown(self) -> None:
        self.crm.request_shutdown()

    def handle(self, message: object) -> object:
        if message == "state":
            return self.crm.state
        if message == "is_master":
            return self.crm.state == CrmState.MASTER
        return None
