"""Worker actors: run resource-agent commands off the LRM's thread (BEHAVIOUR.md §3.3.2).

At most ``max_workers`` commands run at once. A command that runs past its
timeout is reported as killed (status = SIGKILL, logged by the LRM as
``got signal 9``) and its worker is abandoned and replaced, so a hung agent
never blocks the node. The agents bound their own waits; this is the
backstop.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import pykka
from loguru import logger

from ha.agent import AgentDied, exec_resource_agent
from ha.config.resources import ResourceConfig
from ha.constants import ExitCode
from ha.env import Env
from ha.lrm import Job
from store.base import StoreError

# the commands a worker tries again when the store did not answer (idempotent ones)
RETRIED_ON_STORE_ERROR = frozenset({"started", "stopped", "request_stop"})


@dataclass(frozen=True)
class Execute:
    job: Job
    conf: ResourceConfig | None


@dataclass(frozen=True)
class WorkerDone:
    sid: str
    status: int  # waitpid style: -1 failed to execute, signal in the low bits, else code << 8
    worker: int


class WorkerActor(pykka.ThreadingActor):
    def __init__(self, index: int, env: Env, done: Callable[[WorkerDone], None]) -> None:
        super().__init__()
        self.index = index
        self.env = env
        self.done = done

    def on_failure(self, exception_type: object, exception_value: object, traceback: object) -> None:
        logger.bind(ident=f"{self.env.nodename()}/worker").critical(
            f"worker {self.index} died: {exception_value!r}"
        )

    def on_receive(self, message: object) -> None:
        if not isinstance(message, Execute):
            return
        job = message.job
        status = -1
        try:
            res = exec_resource_agent(self.env, job.sid, message.conf, job.state, job.params)
            status = res << 8 if res > 0 else res
        except AgentDied as e:
            self.env.log("err", str(e))
        except StoreError as e:
            # The store did not answer (an etcd majority slow under load, say): the agent could
            # not read what it needed, which says nothing about the service. A start or a stop
            # is tried again next round (ETRY_AGAIN: no result, no restart counted); before,
            # the service went to ``error`` and waited for an operator. SAFETY: both are
            # idempotent (a start first checks whether the service runs, a stop whether it is
            # stopped), and the LRM only retries while the master still asks for it here.
            # Anything else (a migration half done) stays a failure to execute.
            self.env.log("warning", f"resource agent {job.sid}: store not available ({e}), trying again")
            status = ExitCode.ETRY_AGAIN << 8 if job.state in RETRIED_ON_STORE_ERROR else -1
        except Exception as e:  # an agent bug must not kill the worker silently
            logger.opt(exception=e).bind(ident=f"{self.env.nodename()}/worker").error(
                f"resource agent {job.sid} crashed: {e}"
            )
            status = -1
        self.done(WorkerDone(job.sid, status, self.index))


class ActorWorkerPool:
    """The LRM's :class:`ha.lrm.WorkerPool` backed by worker actors.

    Used only from the LRM actor's thread; ``WorkerDone`` messages reach the
    LRM actor, which hands them to :meth:`finished`.
    """

    def __init__(
        self,
        size: int,
        make_env: Callable[[int], Env],
        notify: Callable[[WorkerDone], None],
        command_timeout: float,
    ) -> None:
        self.size = size
        self.make_env = make_env
        self.notify = notify
        self.command_timeout = command_timeout
        self.workers: dict[int, pykka.ActorRef[WorkerActor]] = {}
        self.busy: dict[int, tuple[str, float]] = {}  # worker -> (sid, deadline)
        self.done: list[tuple[str, int]] = []
        self._next = 0

    def _spawn(self) -> int:
        self._next += 1
        idx = self._next
        self.workers[idx] = WorkerActor.start(idx, self.make_env(idx), self.notify)
        return idx

    def start(self, job: Job, conf: ResourceConfig | None) -> None:
        idle = [i for i in self.workers if i not in self.busy]
        idx = idle[0] if idle else self._spawn()
        self.busy[idx] = (job.sid, time.monotonic() + self.command_timeout)
        self.workers[idx].tell(Execute(job, conf))

    def finished(self, msg: WorkerDone) -> None:
        if self.busy.pop(msg.worker, None) is None:
            return  # a worker we abandoned after a timeout: its result was already reported
        self.done.append((msg.sid, msg.status))

    def poll(self) -> list[tuple[str, int]]:
        now = time.monotonic()
        for idx, (sid, deadline) in list(self.busy.items()):
            if now > deadline:
                logger.bind(ident="worker").error(f"resource agent {sid} hung for {self.command_timeout:g}s")
                del self.busy[idx]
                ref = self.workers.pop(idx)
                ref.stop(block=False)  # it will exit when (if) the agent call returns
                self.done.append((sid, int(signal.SIGKILL)))
        out, self.done = self.done, []
        return out

    def stop(self) -> None:
        for ref in self.workers.values():
            ref.stop(block=False)
        self.workers.clear()
