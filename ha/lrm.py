"""The LRM daemon state machine and command execution (BEHAVIOUR.md §3.2, §3.3).

Commands run inline when the Env reports ``max_workers == 0`` (the simulator,
like the reference's test environment); otherwise through a
:class:`WorkerPool` that runs them off the LRM's thread (the live runtime's
worker actors) and reports finished ones on the next ``run_workers`` call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ha.agent import AgentDied, exec_resource_agent
from ha.config.resources import ResourceConfig
from ha.constants import REFERENCE_TIMING, ExitCode, Timing
from ha.daemon import Daemon, lock_with_retries
from ha.env import Env
from ha.errors import HaError
from ha.records import LrmResult, LrmStatus, ServiceData
from ha.states import LRM_TRANSITIONS, LrmMode, LrmState, ServiceState, ShutdownPolicy
from ha.tools import count_active_services, count_fenced_services

S = ServiceState


def _requested(ss: dict[str, ServiceData], sid: str, uid: str) -> bool:
    """``uid`` is the request ``manager_status`` holds for ``sid``."""
    sd = ss.get(sid)
    return sd is not None and sd.uid == uid


@dataclass(slots=True)
class Job:
    """One queued or running resource command."""

    sid: str
    uid: str | None  # None marks the stop jobs of a node shutdown
    state: str
    params: dict[str, Any] = field(default_factory=dict)
    start_tries: int = 0
    started: bool = False


class WorkerPool(Protocol):
    """Runs jobs concurrently; ``status`` follows waitpid: -1 failed, signal bits, code << 8."""

    def start(self, job: Job, conf: ResourceConfig | None) -> None: ...

    def poll(self) -> list[tuple[str, int]]: ...


@dataclass(slots=True)
class StartupWrite:
    """The reference's process-global "lrm_status written at startup" flag (§3.2.4 step 0).

    In the simulator all LRMs share one instance, reproducing the quirk.
    """

    done: bool = False


class LRM(Daemon):
    """One node's local resource manager."""

    TRANSITIONS = LRM_TRANSITIONS
    WHAT = "LRM state"

    def __init__(
        self,
        env: Env,
        startup: StartupWrite | None = None,
        pool: WorkerPool | None = None,
        timing: Timing = REFERENCE_TIMING,
    ) -> None:
        super().__init__(env, timing)
        self.startup = startup if startup is not None else StartupWrite()
        self.pool = pool
        self.mode: str = LrmMode.ACTIVE
        self.workers: dict[str, Job] = {}
        # shutdown stop jobs waiting for a running job of the same service (see queue_resource_command)
        self.after_running: dict[str, Job] = {}
        self.results: dict[str, LrmResult] = {}
        self.restart_tries: dict[str, int] = {}
        self.shutdown_request: float | None = None
        self.shutdown_errors = 0
        self.active_idle_rounds = 0
        self.service_status: dict[str, ServiceData] = {}
        self._pruned_for: dict[str, ServiceData] | None = None
        self.node_status = "unknown"
        self.set_local_status(LrmState.WAIT_FOR_AGENT_LOCK)

    # -- state --------------------------------------------------------------

    def set_local_status(self, new: LrmState) -> None:
        self.change_state(new)

    def is_maintenance_requested(self) -> bool:
        return self.mode == LrmMode.MAINTENANCE

    # -- records --------------------------------------------------------------

    def update_lrm_status(self) -> bool:
        env = self.env
        if not env.quorate():
            return False
        status = LrmStatus(
            state=self.state, mode=self.mode, timestamp=env.get_time(), results=self.published_results()
        )
        try:
            env.write_lrm_status(status)
        except HaError as e:
            env.log("err", f"unable to write lrm status file - {e}")
            return False
        return True

    def published_results(self) -> dict[str, LrmResult]:
        """The results lrm_status carries: all of them (§4 *Reporting*); the live LRM holds some back."""
        return self.results

    def update_service_status(self) -> bool:
        """§3.2.2: read manager_status and derive this node's mode."""
        env = self.env
        try:
            ms = env.read_manager_status()
        except HaError as e:
            env.log("err", f"updating service status from manager failed: {e}")
            return False
        node = env.nodename()
        if ms.service_status is not self.service_status:
            self.service_status = ms.service_status
        self.node_status = ms.node_status.get(node, "unknown")
        if self.shutdown_request is None:
            request = (ms.node_request or {}).get(node, {})
            if request.get("maintenance"):
                self.mode = LrmMode.MAINTENANCE
            elif ms.disarm is not None:
                self.mode = LrmMode.DISARM
            elif self.mode in (LrmMode.MAINTENANCE, LrmMode.DISARM):
                self.mode = LrmMode.ACTIVE
        return True

    def active_service_count(self) -> int:
        return count_active_services(self.service_status, self.env.nodename())

    def has_configured_service_on_local_node(self) -> bool:
        node = self.env.nodename()
        return any(sd.node == node for sd in self.service_status.values())

    # -- lock + watchdog -----------------------------------------------------------

    def get_protected_ha_agent_lock(self) -> bool:
        env = self.env
        if not lock_with_retries(env, env.get_ha_agent_lock, self.timing.lock_max_seconds):
            return False
        self.renew_watchdog()
        return True

    # -- shutdown request (§3.2.5) ---------------------------------------------------

    def request_shutdown(self) -> None:
        if self.shutdown_request is not None:
            return
        env = self.env
        node = env.nodename()
        shutdown, reboot = env.is_node_shutdown()
        policy = env.get_datacenter_settings().shutdown_policy
        if shutdown:
            env.log("info", f"got shutdown request with shutdown policy '{policy}'")
        freeze_all = False
        maintenance = False
        if policy == ShutdownPolicy.CONDITIONAL:
            freeze_all = reboot
        elif policy == ShutdownPolicy.FREEZE:
            freeze_all = True
        elif policy == ShutdownPolicy.FAILOVER:
            freeze_all = False
        elif policy == ShutdownPolicy.MIGRATE:
            maintenance = True
        else:
            env.log("err", f"unknown shutdown policy '{policy}', fall back to conditional")
            freeze_all = reboot

        if shutdown and not maintenance:
            # guests must never block the host shutdown: stop every local service
            for sid in sorted(self.service_status):
                if self.service_status[sid].node == node:
                    self.queue_resource_command(sid, None, S.REQUEST_STOP)

        if shutdown:
            kind = "reboot" if reboot else "shutdown"
            if self.is_maintenance_requested():
                if maintenance:
                    env.log("info", f"{kind} LRM, ignore maintenance policy, already in maintenance mode")
                else:
                    env.log(
                        "info", f"{kind} LRM, ignore {policy} policy as manual maintenance mode is enabled"
                    )
            elif maintenance:
                env.log("info", f"{kind} LRM, doing maintenance, removing this node from active list")
                self.mode = LrmMode.MAINTENANCE
            elif freeze_all:
                env.log("info", f"{kind} LRM, stop and freeze all services")
                self.mode = LrmMode.RESTART
            else:
                env.log("info", "shutdown LRM, stop all services")
                self.mode = LrmMode.SHUTDOWN
        elif self.mode == LrmMode.MAINTENANCE:
            # quirk (§3.2.5): the reference passes a malformed level string here
            env.log(
                "\n\t    info",
                "Restarting LRM in maintenance mode may be delayed until all services are moved",
            )
        else:
            env.log("info", "restart LRM, freeze all services")
            self.mode = LrmMode.RESTART

        self.shutdown_request = env.get_time()
        if not self.update_lrm_status():
            env.log("err", "unable to update lrm status file - not quorate?")

    # -- iteration (§3.2.4) -----------------------------------------------------------

    def work(self) -> bool:
        env = self.env
        if not self.startup.done:
            if self.update_lrm_status():
                self.startup.done = True
            else:
                env.sleep(self.timing.wait_sleep)
                return self.shutdown_request is None

        self.update_service_status()
        fence_request = (
            count_fenced_services(self.service_status, env.nodename()) > 0 or self.node_status == "fence"
        )

        state = self.state
        if state == LrmState.WAIT_FOR_AGENT_LOCK:
            if self.mode != LrmMode.DISARM and (
                not fence_request and self.active_service_count() > 0 and env.quorate()
            ):
                if self.get_protected_ha_agent_lock():
                    self.set_local_status(LrmState.ACTIVE)
        elif state == LrmState.LOST_AGENT_LOCK:
            if not fence_request and env.quorate() and self.get_protected_ha_agent_lock():
                self.set_local_status(LrmState.ACTIVE)
        elif state == LrmState.ACTIVE:
            if fence_request:
                # SAFETY: stop renewing (not releasing) the lock; the watchdog stays armed
                env.log("err", "node needs to be fenced - releasing agent_lock")
                self.set_local_status(LrmState.LOST_AGENT_LOCK)
            elif not self.get_protected_ha_agent_lock():
                self.set_local_status(LrmState.LOST_AGENT_LOCK)
            elif self.mode == LrmMode.MAINTENANCE:
                self.set_local_status(LrmState.MAINTENANCE)
            elif self.mode == LrmMode.DISARM and self.run_workers() == 0:
                env.log("info", "HA disarm requested, releasing agent lock and watchdog")
                env.release_ha_agent_lock()
                self.give_up_watchdog()
                self.set_local_status(LrmState.WAIT_FOR_AGENT_LOCK)
            elif not self.has_configured_service_on_local_node() and not self.run_workers():
                # no service here and all (old) workers are done
                self.active_idle_rounds += 1
                if self.active_idle_rounds > self.timing.lrm_max_idle_rounds:
                    rounds = self.timing.lrm_max_idle_rounds
                    env.log("info", f"node had no service configured for {rounds} rounds, going idle.")
                    # safety: no active service and no worker for a while
                    env.release_ha_agent_lock()
                    self.give_up_watchdog()
                    self.set_local_status(LrmState.WAIT_FOR_AGENT_LOCK)
                    self.active_idle_rounds = 0
            elif self.active_idle_rounds:
                self.active_idle_rounds = 0
        elif state == LrmState.MAINTENANCE:
            if fence_request:
                env.log("err", "node needs to be fenced during maintenance mode - releasing agent_lock")
                self.set_local_status(LrmState.LOST_AGENT_LOCK)
            elif self.mode == LrmMode.DISARM and self.active_service_count() == 0 and self.run_workers() == 0:
                env.log("info", "HA disarm requested during maintenance, releasing agent lock and watchdog")
                env.release_ha_agent_lock()
                self.give_up_watchdog()
                self.set_local_status(LrmState.WAIT_FOR_AGENT_LOCK)
            elif self.active_service_count() or self.run_workers():
                # keep lock and watchdog until every service left this node
                if not self.get_protected_ha_agent_lock():
                    self.set_local_status(LrmState.LOST_AGENT_LOCK)
            elif not self.is_maintenance_requested():
                if self.get_protected_ha_agent_lock():
                    self.set_local_status(LrmState.ACTIVE)
                else:
                    self.set_local_status(LrmState.LOST_AGENT_LOCK)

        state = self.state
        if state == LrmState.WAIT_FOR_AGENT_LOCK:
            if self.shutdown_request is not None:
                return False
            self.update_lrm_status()
            env.sleep(self.timing.wait_sleep)
        elif state == LrmState.ACTIVE:
            return self._work_active()
        elif state == LrmState.LOST_AGENT_LOCK:
            # the watchdog is armed and fires unless the lock comes back soon
            if self.shutdown_request is not None:
                count = self.active_service_count()
                if count > 0:
                    msg = (
                        f"got shutdown request in state 'lost_agent_lock' - detected {count} running services"
                    )
                    env.log("err", msg)
                    if (
                        self.mode == LrmMode.RESTART
                        and env.get_time() - self.state_change_time > self.timing.lrm_restart_give_up
                    ):
                        limit = f"{self.timing.lrm_restart_give_up:g}"
                        env.log(
                            "err",
                            f"lost agent lock and restart request for over {limit} seconds - giving up!",
                        )
                        return False
                else:
                    self.give_up_watchdog()
                    return False
            env.sleep(self.timing.wait_sleep)
        elif state == LrmState.MAINTENANCE:
            return self._work_maintenance()
        return True

    def _work_active(self) -> bool:
        env = self.env
        start = env.get_time()
        shutdown = False
        try:
            if self.update_service_status():
                if self.shutdown_request is not None:
                    if self.mode == LrmMode.RESTART:
                        workers = self.run_workers()
                        if self.active_service_count() == 0 and workers == 0:
                            # safety: no running services, the watchdog may go
                            self.give_up_watchdog()
                            shutdown = True
                            env.release_ha_agent_lock()
                    elif self.run_workers() == 0:
                        if self.shutdown_errors == 0:
                            # safety: every service stopped, the watchdog may go
                            self.give_up_watchdog()
                            env.release_ha_agent_lock()
                        shutdown = True
                elif not self.cluster_state_update_ok:
                    env.log("notice", "temporary inconsistent cluster state (cfs restart?), skip round")
                else:
                    self.manage_resources()
        except HaError as e:
            env.log("err", f"got unexpected error - {e}")
        self.update_lrm_status()
        if shutdown:
            return False
        env.sleep_until(start + self.timing.lrm_loop)
        return True

    def _work_maintenance(self) -> bool:
        env = self.env
        start = env.get_time()
        if not self.update_service_status():
            return False  # quirk (§3.2.4): a read failure here ends the daemon
        exit_lrm = False
        if self.active_service_count() == 0 and self.run_workers() == 0:
            # safety: every active service left this node
            self.give_up_watchdog()
            env.release_ha_agent_lock()
            if self.shutdown_request is not None:
                exit_lrm = True
        if not exit_lrm:
            self.manage_resources()
        self.update_lrm_status()
        if exit_lrm:
            return False
        env.sleep_until(start + self.timing.lrm_maintenance_loop)
        return True

    # -- command execution (§3.3) --------------------------------------------------------

    def manage_resources(self) -> int:
        node = self.env.nodename()
        ss = self.service_status
        for sid in [s for s in self.restart_tries if s not in ss]:
            del self.restart_tries[sid]
        sc = self.env.read_service_config()
        for sid, sd in ss.items():
            if sd.node != node or not sd.uid:
                continue
            if sc.incomplete and sid not in sc.services:
                # ours (issue #10): its section cannot be read now. Run without it, the agent would
                # fail with "missing resource configuration" and the service go to error; its
                # request waits (a move waits with it) until the file reads again.
                continue
            # recovery: the master finishes it first; freeze/request_start: CRM-internal
            if sd.state in (S.RECOVERY, S.FREEZE, S.REQUEST_START):
                continue
            params: dict[str, Any] = {}
            if sd.target is not None:
                params["target"] = sd.target
            if sd.timeout is not None:
                params["timeout"] = sd.timeout
            self.queue_resource_command(sid, sd.uid, sd.state, params)
        return self.run_workers()

    def queue_resource_command(
        self, sid: str, uid: str | None, state: str, params: dict[str, Any] | None = None
    ) -> None:
        # never run the same request twice; 'stopped' is re-run every round on purpose
        if uid is not None and uid in self.results and state != S.STOPPED:
            return
        job = self.workers.get(sid)
        if job is not None:
            if job.started:
                if uid is None:
                    # A node-shutdown stop job is queued only once: it must not be lost
                    # because a (status) command for the service happens to be running;
                    # it runs as soon as that one finished. (The reference drops it; its
                    # forked workers make this race rare, our worker pool does not.)
                    self.after_running[sid] = Job(sid, uid, state, dict(params or {}))
                return
            del self.workers[sid]
        self.workers[sid] = Job(sid, uid, state, dict(params or {}))

    def run_workers(self) -> int:
        """§3.3.2: start queued commands (inline when ``max_workers`` is 0); return how many remain.

        With a worker pool the call never blocks: finished commands are
        collected on the next call (the pool wakes the LRM when one ends).
        """
        env = self.env
        max_workers = env.get_max_workers()
        start = env.get_time()
        sc = env.read_service_config()
        while True:  # at least one pass, also when the slot budget is 0 (live runtime)
            running = self._collect_finished()
            queued = sorted(
                (j for j in self.workers.values() if not j.started), key=lambda j: (-j.start_tries, j.sid)
            )
            for job in queued:
                job.start_tries += 1
                if max_workers and running >= max_workers:
                    continue
                if max_workers > 0 and self.pool is not None:
                    job.started = True
                    self.pool.start(job, sc.get(job.sid))
                    running += 1
                else:
                    self._run_inline(job, sc.get(job.sid))
            over_budget = env.get_time() - start > self.timing.worker_slot_budget
            if not running or self.pool is not None or over_budget:
                break
            env.sleep(1)
        return len(self.workers)

    def _collect_finished(self) -> int:
        if self.pool is not None:
            for sid, status in self.pool.poll():
                self.command_finished(sid, status)
        return sum(1 for j in self.workers.values() if j.started)

    def _run_inline(self, job: Job, conf: ResourceConfig | None) -> None:
        status = -1
        try:
            res = exec_resource_agent(self.env, job.sid, conf, job.state, job.params)
            status = res << 8 if res > 0 else res
        except AgentDied as e:
            self.env.log("err", str(e))
        self.command_finished(job.sid, status)

    def command_finished(self, sid: str, status: int) -> None:
        """A worker ended: decode its status and record the result (§3.3.2)."""
        job = self.workers.pop(sid, None)
        if job is None:
            return
        waiting = self.after_running.pop(sid, None)
        if waiting is not None:
            self.workers[sid] = waiting
        exit_code = -1
        if status == -1:
            self.env.log("err", f"resource agent {sid} finished - failed to execute")
        elif status & 127:
            self.env.log("err", f"resource agent {sid} finished - got signal {status & 127}")
        else:
            exit_code = status >> 8
        if job.uid is None:
            if exit_code != 0:
                self.shutdown_errors += 1
            return
        exit_code = self.handle_service_exitcode(sid, job.state, exit_code)
        if exit_code == ExitCode.ETRY_AGAIN:
            return  # tell nobody, simply retry next round
        # keep only results whose uid is still requested (§3.3.2), pruned once per
        # manager_status read. A uid is one service's (ha/uid.py: master node, time and
        # counter), so that service's entry tells; no set of every uid per read and node.
        ss = self.service_status
        if self._pruned_for is not ss:
            self.results = {uid: r for uid, r in self.results.items() if _requested(ss, r.sid, uid)}
            self._pruned_for = ss
        if _requested(ss, sid, job.uid):
            self.results[job.uid] = LrmResult(sid, job.state, exit_code)

    def handle_service_exitcode(self, sid: str, cmd: str, exit_code: int) -> int:
        """Restart policy (§3.3.4): retry failed starts up to ``max_restart`` times."""
        if cmd != S.STARTED:
            return exit_code
        if exit_code == ExitCode.SUCCESS:
            self.restart_tries[sid] = 0
            return exit_code
        if exit_code != ExitCode.ERROR:
            return exit_code
        cd = self.env.read_service_config().get(sid)
        max_restart = cd.max_restart if cd is not None else 0
        tries = self.restart_tries.setdefault(sid, 0)
        if tries >= max_restart:
            self.env.log("err", f"unable to start service {sid} on local node after {tries} retries")
            self.restart_tries[sid] = 0
            return ExitCode.ERROR
        self.restart_tries[sid] = tries + 1
        self.env.log("warning", f"restart policy: retry number {tries + 1} for service '{sid}'")
        return ExitCode.ETRY_AGAIN
