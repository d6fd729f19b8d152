"""The LRM actor: the core LRM of one node, executing through worker actors.

It iterates on a timer (agent lease renewal every ``renew_interval``) and on
events (a ``ServiceCommand`` from the master, a worker finishing). The core
writes ``lrm_status`` with the results first; the node runtime then sends
them to the master (``CommandResult``).
"""

from __future__ import annotations

from collections.abc import Callable

from actors.daemon import DaemonActor, Exited, Waker
from actors.worker import ActorWorkerPool, WorkerDone
from ha.constants import Timing
from ha.env import Env
from ha.lrm import LRM


class LrmActor(DaemonActor):
    name = "lrm"

    def __init__(
        self,
        node: str,
        env: Env,
        timing: Timing,
        make_worker_env: Callable[[int], Env],
        max_workers: int,
        command_timeout: float,
        on_exit: Callable[[Exited], None],
        waker: Waker | None = None,
        pre_iterate: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(node, on_exit, waker)
        self.pre_iterate = pre_iterate
        self.pool = ActorWorkerPool(max_workers, make_worker_env, self._worker_done, command_timeout)
        self.lrm = LRM(env, pool=self.pool, timing=timing)

    def _worker_done(self, msg: WorkerDone) -> None:
        # called on a worker's thread: hand over to this actor's thread
        self.actor_ref.tell(msg)

    def handle(self, message: object) -> object:
        if isinstance(message, WorkerDone):
            self.pool.finished(message)
            # one iteration collects every command finished by then (wake-ups coalesce)
            self.waker.poke()
            return None
        if message == "state":
            return (self.lrm.state, self.lrm.mode)
        return None

    def iterate(self) -> bool:
        if self.pre_iterate is not None:
            self.pre_iterate()
        return self.lrm.do_one_iteration()

    def shutdown(self) -> None:
        self.lrm.request_shutdown()

    def on_stop(self) -> None:
        self.pool.stop()
