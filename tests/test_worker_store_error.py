"""A store that does not answer during a start is no fault of the service (issue #15).

At 20 nodes on etcd, under load, a start's read of the store timed out: the worker
reported "failed to execute" and the service went to ``error`` for an operator to
clear. Now a start or stop is tried again next round; other commands still fail.
"""

from __future__ import annotations

import queue
from typing import Any

import pytest

from actors.worker import Execute, WorkerActor, WorkerDone
from ha.config.resources import ResourceConfig
from ha.constants import ExitCode
from ha.env import Env
from ha.lrm import Job
from store.base import StoreError
from tests.agents.helpers import AgentEnv, conf
from tests.test_lrm_pool import setup


class SilentStore:
    """A plugin whose every look at the store times out."""

    def check_running(self, env: Env, sid: str, conf: ResourceConfig) -> bool:
        raise StoreError("etcd: /v3/kv/range: no answer in time")

    def __getattr__(self, name: str) -> Any:
        return self.check_running


def run(state: str) -> WorkerDone:
    env = AgentEnv("n1", {"proc": SilentStore()})  # type: ignore[dict-item]
    done: queue.Queue[WorkerDone] = queue.Queue()
    worker = WorkerActor.start(0, env.env, done.put)
    try:
        worker.tell(Execute(Job("proc:a", "u1", state), conf("proc:a", cmd="exec sleep 100")))
        return done.get(timeout=10)
    finally:
        worker.stop()


@pytest.mark.parametrize("state", ["started", "stopped", "request_stop"])
def test_a_start_or_stop_is_tried_again(state: str) -> None:
    assert run(state).status == ExitCode.ETRY_AGAIN << 8


@pytest.mark.parametrize("state", ["migrate", "relocate"])
def test_a_move_still_fails(state: str) -> None:
    assert run(state).status == -1


def test_the_lrm_reports_nothing_and_starts_it_again_next_round() -> None:
    _env, pool, lrm = setup()
    assert lrm.do_one_iteration()
    pool.finished.append(("vm:100", ExitCode.ETRY_AGAIN << 8))
    lrm.do_one_iteration()
    assert lrm.results == {}  # the master sees no failure: no error state
    lrm.do_one_iteration()
    assert [(j.sid, j.uid, j.state) for j in pool.started] == [("vm:100", "u1", "started")] * 2
