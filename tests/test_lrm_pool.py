"""The LRM with a worker pool (the live runtime's mode): commands run asynchronously."""

from __future__ import annotations

from bench.sim import RoundEnv
from ha.config.resources import ResourceConfig, ServiceConfig
from ha.lrm import LRM, Job
from ha.records import LrmStatus, ManagerStatus, ServiceData
from ha.states import LrmMode


class PoolEnv(RoundEnv):
    def __init__(self, ms: ManagerStatus, conf: ServiceConfig) -> None:
        super().__init__(["node1", "node2", "node3"], conf, ms)
        self.shutdown = (False, False)
        self.written: list[LrmStatus] = []

    def get_max_workers(self) -> int:
        return 4

    def is_node_shutdown(self) -> tuple[bool, bool]:
        return self.shutdown

    def write_lrm_status(self, status: LrmStatus) -> None:
        self.written.append(status)


class FakePool:
    def __init__(self) -> None:
        self.started: list[Job] = []
        self.finished: list[tuple[str, int]] = []

    def start(self, job: Job, conf: ResourceConfig | None) -> None:
        self.started.append(job)

    def poll(self) -> list[tuple[str, int]]:
        out, self.finished = self.finished, []
        return out


def setup() -> tuple[PoolEnv, FakePool, LRM]:
    conf = ServiceConfig({"vm:100": ResourceConfig(sid="vm:100", type="vm", name="100", node="node1")})
    ms = ManagerStatus(
        node_status={"node1": "online"}, service_status={"vm:100": ServiceData("started", "node1", "u1")}
    )
    env = PoolEnv(ms, conf)
    pool = FakePool()
    return env, pool, LRM(env, pool=pool)


def test_commands_run_in_the_pool_and_results_are_collected_later() -> None:
    _env, pool, lrm = setup()
    assert lrm.do_one_iteration()
    assert [(j.sid, j.uid, j.state) for j in pool.started] == [("vm:100", "u1", "started")]
    assert lrm.results == {}
    pool.finished.append(("vm:100", 0))
    assert lrm.do_one_iteration()
    assert lrm.results["u1"].exit_code == 0
    # the same uid is never run twice
    assert len(pool.started) == 1


def test_shutdown_stop_job_waits_for_a_running_command_instead_of_being_lost() -> None:
    env, pool, lrm = setup()
    lrm.do_one_iteration()  # 'started' check of u1 is now running in a worker
    env.shutdown = (True, True)  # reboot, conditional policy -> stop and freeze
    lrm.request_shutdown()
    assert lrm.mode == LrmMode.RESTART
    assert [j.uid for j in pool.started] == ["u1"]  # the stop job did not preempt it
    pool.finished.append(("vm:100", 0))
    lrm.do_one_iteration()
    stops = [j for j in pool.started if j.uid is None]
    assert [(j.sid, j.state) for j in stops] == [("vm:100", "request_stop")]
