"""The simulator's run loop and command vocabulary (BEHAVIOUR.md §9.4, §9.5).

One round: every node in name order runs its CRM then its LRM iteration
(each costs one virtual second), the watchdogs of all nodes are checked after
every node, the round is padded to ``max(20, 2 * nodes)`` seconds, and every
fifth round the next batch of the cmdlist is applied.

Scale mode (``RunOptions(scale=True)``, ``ha-sim run --scale``; ours, issue #15)
models the nodes working in parallel, as real nodes do: every daemon of a round
runs at the round's start instant (one after another, in name order, so the run
stays deterministic), the hardware clock does not advance between nodes, and a
round lasts :data:`PARALLEL_ROUND` virtual seconds whatever the node count. The
reference's sequential round grows by 2 s per node: from 30 nodes on it reaches the
60 s watchdog timeout, from 60 nodes the 120 s lock timeout, and the nodes' watchdogs
reset them (docs/SIMULATOR.md, docs/SCALE.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ha.announce import Announcer, Reporter
from ha.crm import CRM
from ha.errors import HaError, SimulationError
from ha.lrm import LRM
from sim.env import AnnounceHook, ReportHook, SimEnv, new_resources_view
from sim.hardware import Hardware
from sim.scenario import Scenario

MAX_VIRTUAL_TIME = 10000
END_AFTER_LAST_COMMAND = 500
BATCH_EVERY_ROUNDS = 5
# scale mode: a round's virtual length, whatever the node count (the reference's minimum, §9.4)
PARALLEL_ROUND = 20

_DELAY = re.compile(r"^delay\s+(\d+)\s*$")
_SKIP = re.compile(r"^skip-round\s+(crm|lrm)(?:\s+(\d+))?\s*$")


@dataclass
class RunOptions:
    """``scale``: big clusters. Lifts the reference's loop budget and node-count limit, and runs
    the nodes of a round in parallel virtual time (see the module docstring)."""

    scale: bool = False
    max_time: int = MAX_VIRTUAL_TIME


@dataclass
class Observer:
    """Hooks for invariant checkers (the fuzzer): called after every daemon step."""

    after_step: Callable[[Hardware], None] | None = None
    announced: AnnounceHook | None = None  # after every manager_status write, with what is announced
    reported: ReportHook | None = None  # after every lrm_status write with new results


class Simulation:
    def __init__(
        self,
        scenario: Scenario,
        options: RunOptions | None = None,
        out: Callable[[str], object] | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.options = options or RunOptions()
        self.hw = Hardware(scenario, out)
        # the per-node daemon environments live as long as the simulation (§9.4)
        self.crm_envs = {n: SimEnv(self.hw, n, "crm") for n in self.hw.nodes}
        self.lrm_envs = {n: SimEnv(self.hw, n, "lrm") for n in self.hw.nodes}
        if self.options.scale:
            for env in [*self.crm_envs.values(), *self.lrm_envs.values()]:
                env.loop_delay_limit = None
        self.cmdlist = [list(batch) for batch in scenario.cmdlist]
        self.skip_crm = 0
        self.skip_lrm = 0
        self.observer = observer or Observer()
        for env in self.crm_envs.values():
            env.on_announce = self.observer.announced
        for env in self.lrm_envs.values():
            env.on_report = self.observer.reported
        self.rounds = 0

    # -- daemon control ---------------------------------------------------------

    def _start_crm(self, node: str) -> CRM:
        self.crm_envs[node].resources_view = new_resources_view()  # a new process reads afresh
        self.crm_envs[node].config_errors_logged.clear()
        return CRM(self.crm_envs[node])

    def _start_lrm(self, node: str) -> LRM:
        self.lrm_envs[node].resources_view = new_resources_view()
        self.lrm_envs[node].config_errors_logged.clear()
        return LRM(self.lrm_envs[node], self.hw.startup_write)

    # -- commands (§9.5) ----------------------------------------------------------

    def hardware_cmd(self, cmdstr: str, logid: str) -> None:
        hw = self.hw
        parts = cmdstr.split()
        if len(parts) < 2:
            raise SimulationError("sim_hardware_cmd: no node or service for command specified")
        cmd, objid, action, params = parts[0], parts[1], parts[2] if len(parts) > 2 else "", parts[3:]
        node = None
        if cmd == "config":
            # ours (issue #10, the fuzzer): "config resources.cfg corrupt SEED" / "... restore"
            hw.log("info", f"execute {cmdstr}", logid)
            if action == "corrupt" and params and params[0].isdigit():
                hw.corrupt_config(objid, int(params[0]))
            elif action == "restore":
                hw.restore_config(objid)
            else:
                raise SimulationError(f"sim_hardware_cmd: unknown action '{action}'")
            return
        if cmd == "service":
            if not re.match(r"^[a-z]+:\S+$", objid):
                raise SimulationError(f"sim_hardware_cmd: invalid service id '{objid}'")
        else:
            if objid not in hw.nodes:
                raise SimulationError(f"sim_hardware_cmd: no such node '{objid}'")
            node = hw.nodes[objid]
        hw.log("info", f"execute {cmdstr}", logid)

        if cmd == "power":
            assert node is not None
            if action not in ("on", "off"):
                raise SimulationError(f"sim_hardware_cmd: unknown action '{action}'")
            if node.power != action:
                if action == "on":
                    if node.crm is None:
                        node.crm = self._start_crm(node.name)
                    if node.lrm is None:
                        node.lrm = self._start_lrm(node.name)
                    node.lrm_restart = False
                    node.cfs_rw = node.cfs_update = True
                else:
                    if node.crm is not None:
                        self.crm_envs[node.name].log("info", "killed by poweroff")
                        node.crm = None
                    if node.lrm is not None:
                        self.lrm_envs[node.name].log("info", "killed by poweroff")
                        node.lrm = None
                    hw.watchdog_reset(node.name)
                    hw.running[node.name] = {}
                    # a new process after power-on: it has announced nothing yet
                    self.crm_envs[node.name].announcer = Announcer(node.name)
                    self.lrm_envs[node.name].reporter = Reporter(node.name)
            node.power = node.network = action
            node.shutdown = None
        elif cmd == "network":
            assert node is not None
            if action not in ("on", "off"):
                raise SimulationError(f"sim_hardware_cmd: unknown network action '{action}'")
            node.network = action
        elif cmd == "cfs":
            assert node is not None
            if action not in ("rw", "update") or not params or params[0] not in ("work", "fail"):
                raise SimulationError(f"sim_hardware_cmd: unknown cfs command '{cmdstr}'")
            ok = params[0] == "work"
            if action == "rw":
                node.cfs_rw = ok
            else:
                node.cfs_update = ok
        elif cmd in ("reboot", "shutdown"):
            assert node is not None
            node.shutdown = cmd
            if node.lrm is not None:
                node.lrm.request_shutdown()
        elif cmd == "restart-lrm":
            assert node is not None
            if node.lrm is not None:
                node.lrm_restart = True
                node.lrm.request_shutdown()
        elif cmd == "crm":
            assert node is not None
            if action == "stop":
                if node.crm is not None:
                    node.crm_stop = True
                    node.crm.request_shutdown()
            elif action == "start":
                if node.crm is None:
                    node.crm = self._start_crm(node.name)
            elif action in ("enable-node-maintenance", "disable-node-maintenance"):
                hw.queue_crm_command(f"{action} {node.name}")
            elif action == "disarm-ha" and params and params[0] in ("freeze", "ignore"):
                hw.queue_crm_command(f"disarm-ha {params[0]}")
            elif action == "arm-ha":
                hw.queue_crm_command("arm-ha")
            else:
                raise SimulationError(f"sim_hardware_cmd: unknown action '{action}'")
        elif cmd == "pve-manager-version":
            assert node is not None
            if action != "set" or not params:
                raise SimulationError(f"sim_hardware_cmd: unknown action '{action}'")
            node.version = params[0]
        elif cmd == "service":
            self._service_cmd(objid, action, params)
        else:
            raise SimulationError(f"sim_hardware_cmd: unknown command '{cmdstr}'")

    def _service_cmd(self, sid: str, action: str, params: list[str]) -> None:
        hw = self.hw
        if action in ("started", "disabled", "stopped", "ignored"):
            hw.set_service_state(sid, action)
        elif action in ("migrate", "relocate"):
            if not params:
                raise SimulationError(f"sim_hardware_cmd: missing target node for '{action}' command")
            hw.queue_crm_command(f"{action} {sid} {params[0]}")
        elif action == "stop":
            if not params:
                raise SimulationError(f"sim_hardware_cmd: missing timeout for '{action}' command")
            hw.queue_crm_command(f"stop {sid} {params[0]}")
        elif action == "add":
            if not params or params[0] not in hw.nodes:
                raise SimulationError(f"sim_hardware_cmd: no such node '{params[0] if params else ''}'")
            state = params[1] if len(params) > 1 and params[1] else "started"
            running = len(params) > 2 and params[2] not in ("", "0")
            hw.add_service(sid, params[0], state, running)
        elif action == "delete":
            hw.delete_service(sid)
        elif action == "lock":
            hw.set_service_lock(sid, params[0] if params else "backup")
        elif action == "unlock":
            current = hw.service_lock(sid)
            if not params or params[0] == current:
                hw.set_service_lock(sid, None)
        elif action == "manual-migrate":
            if not params or params[0] not in hw.nodes:
                raise SimulationError("sim_hardware_cmd: manual-migrate needs a target node")
            raw = hw.service_raw.get(sid)
            if raw is None:
                raise SimulationError(f"no such service '{sid}'")
            disarm = hw.manager_status.disarm or {}
            if raw.get("state") != "ignored" and disarm.get("mode") != "ignore":
                raise SimulationError(
                    f"sim_hardware_cmd: service '{sid}' must be ignored (or HA disarmed in ignore mode) "
                    "for manual-migrate"
                )
            hw.update_service_config(sid, {"node": params[0]}, [])
        elif action in ("set-static-stats", "set-dynamic-stats"):
            hw.stats.set_stats(sid, action.split("-")[1], params)
        else:
            raise SimulationError(f"sim_hardware_cmd: unknown service action '{action}' - not implemented")

    # -- the run loop (§9.4) ----------------------------------------------------------

    def run(self) -> None:
        hw = self.hw
        hw.log("info", "starting simulation")
        try:
            self._loop()
        except HaError as e:
            hw.log("err", f"exit simulation - {e} ")
            return
        hw.log("info", "exit simulation - done")

    def _step_done(self) -> None:
        if self.observer.after_step is not None:
            self.observer.after_step(self.hw)

    def _loop(self) -> None:
        hw = self.hw
        last_command_time = 0
        next_cmd_at = 0
        loop_count = 0
        nodes = sorted(hw.nodes)
        parallel = self.options.scale
        looptime = PARALLEL_ROUND if parallel else max(20, 2 * len(nodes))
        if looptime >= 60:
            raise SimulationError(
                "unable to simulate so many nodes. You need to increase watchdog/lock timeouts."
            )
        while True:
            start = hw.time
            if parallel:
                # the clock only moves between rounds: one check at the new instant, before any
                # daemon updates a watchdog, sees every expiry (the sequential loop checks after
                # each node's slot, §9.4 step 2c, and can miss one: docs/SIMULATOR.md, known limits)
                self._check_watchdogs(nodes)
            for i, name in enumerate(nodes):
                node = hw.nodes[name]
                if node.crm is not None:
                    if self.skip_crm > 0:
                        if i == 0:
                            hw.log("info", "skipping CRM round", "run-loop")
                    else:
                        self._run_crm(name)
                if node.lrm is not None:
                    if self.skip_lrm > 0:
                        if i == 0:
                            hw.log("info", "skipping LRM round", "run-loop")
                    else:
                        self._run_lrm(name)
                if not parallel:
                    self._check_watchdogs(nodes)
                self._step_done()
            self.skip_crm = max(0, self.skip_crm - 1)
            self.skip_lrm = max(0, self.skip_lrm - 1)
            self.rounds += 1

            if hw.time - start < looptime:
                hw.time = start + looptime
            if hw.time > self.options.max_time:
                raise SimulationError("simulation end")
            for name in nodes:
                self.lrm_envs[name].force_time(hw.time)
                self.crm_envs[name].force_time(hw.time)

            if hw.time < next_cmd_at:
                continue
            if loop_count % BATCH_EVERY_ROUNDS == 0:
                batch = self.cmdlist.pop(0) if self.cmdlist else None
                if batch is None and hw.time - last_command_time > END_AFTER_LAST_COMMAND:
                    return
                for cmd in batch or []:
                    last_command_time = hw.time
                    m = _DELAY.match(cmd)
                    s = _SKIP.match(cmd)
                    if m:
                        hw.log("info", f"execute {cmd}", "cmdlist")
                        next_cmd_at = hw.time + int(m.group(1))
                    elif s:
                        hw.log("info", f"execute {cmd}", "cmdlist")
                        count = int(s.group(2)) if s.group(2) else 1
                        if s.group(1) == "crm":
                            self.skip_crm = count
                        else:
                            self.skip_lrm = count
                    else:
                        self.hardware_cmd(cmd, "cmdlist")
                self._step_done()
            loop_count += 1

    def _check_watchdogs(self, nodes: list[str]) -> None:
        """§9.3: an expired watchdog powers its node off."""
        hw = self.hw
        for n in nodes:
            if not hw.watchdog_check(n):
                self.hardware_cmd(f"power {n} off", "watchdog")
                hw.log("info", f"server '{n}' stopped by poweroff (watchdog)")
                hw.nodes[n].crm = None
                hw.nodes[n].lrm = None

    def _iterate(self, daemon: CRM | LRM, env: SimEnv) -> bool:
        """One daemon iteration; the hardware clock follows the daemon's (§9.4).

        In scale mode it does not: every daemon of the round starts at the round's instant.
        Returns True when the daemon exited (after logging it, like the reference).
        """
        keep = daemon.do_one_iteration()
        if not self.options.scale:
            self.hw.time = max(self.hw.time, int(env.time))
        if not keep:
            env.log("info", "exit (loop end)")
        return not keep

    def _run_crm(self, name: str) -> None:
        node = self.hw.nodes[name]
        assert node.crm is not None
        if not self._iterate(node.crm, self.crm_envs[name]):
            return
        node.crm = None
        if node.shutdown == "reboot":
            self.hardware_cmd(f"power {name} off", "reboot")
            self.hardware_cmd(f"power {name} on", "reboot")
        elif node.shutdown == "shutdown":
            self.hardware_cmd(f"power {name} off", "shutdown")
        elif not node.crm_stop:
            raise SimulationError("unexpected CRM exit - not implemented")
        node.crm_stop = False

    def _run_lrm(self, name: str) -> None:
        node = self.hw.nodes[name]
        assert node.lrm is not None
        if not self._iterate(node.lrm, self.lrm_envs[name]):
            return
        node.lrm = None
        if node.lrm_restart:
            if node.shutdown:
                raise SimulationError("LRM restart during shutdown - not implemented")
            node.lrm_restart = False
            node.lrm = self._start_lrm(name)
        elif node.shutdown in ("reboot", "shutdown"):
            self.hardware_cmd(f"crm {name} stop", node.shutdown)
        else:
            raise SimulationError("unexpected LRM exit - not implemented")


def run_scenario(
    scenario: Scenario,
    options: RunOptions | None = None,
    out: Callable[[str], object] | None = None,
) -> Simulation:
    sim = Simulation(scenario, options, out)
    sim.run()
    return sim
