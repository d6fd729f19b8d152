"""The CRM master's Manager: one ``manage()`` call is one round (BEHAVIOUR.md §5).

Everything here is decided from the records read through the Env; the only
effects are the Env calls (log, locks, record writes).
"""

# size: the reference's Manager (§5) is one class whose round, recovery, fencing and command handling
#   share its state; its methods follow the reference's subs one to one (next_state_*, update_crm_commands,
#   ...), which keeps the review against BEHAVIOUR.md and the oracle logs direct

from __future__ import annotations

from collections.abc import Callable

from ha.config.crm_commands import parse_crm_command
from ha.config.datacenter import DatacenterConfig
from ha.config.groups import GroupConfig
from ha.config.resources import ResourceConfig, ServiceConfig
from ha.config.rules import RulesConfig
from ha.constants import (
    GROUP_MIGRATION_FIRST_ROUND,
    GROUP_MIGRATION_MIN_VERSION,
    GROUP_MIGRATION_RETRY_ROUNDS,
    REFERENCE_TIMING,
    ExitCode,
    Timing,
)
from ha.crs.balance import stationary_bundles
from ha.crs.stats import BASIC, DYNAMIC, STATIC
from ha.crs.usage import LoadUsage
from ha.env import Env
from ha.errors import HaError
from ha.groups import add_group_rules, apply_group_failback, version_at_least
from ha.motion import check_motion
from ha.node_status import NodeStatus
from ha.placement import Preference, select_service_node
from ha.records import LrmResult, ManagerStatus, ServiceData
from ha.rules import CompiledRules, compile_rules, transform
from ha.states import (
    SERVICE_TRANSITIONS,
    LrmMode,
    LrmState,
    NodeState,
    RequestedState,
    ServiceState,
    check_transition,
)
from ha.tools import count_active_services
from ha.uid import UidGenerator
from ha.usage import BasicUsage, Usage

S = ServiceState

# Enum members the per-service passes read, bound once: on Python 3.11 reading a member
# through its class costs about 0.1 µs, and every pass of a round reads several per service
_FENCE = S.FENCE
_RECOVERY = S.RECOVERY
_ONLINE = NodeState.ONLINE
_LRM_RESTART = LrmMode.RESTART
_FREEZABLE = frozenset({S.STARTED, S.STOPPED, S.REQUEST_STOP})
_REQ_STARTED = RequestedState.STARTED
_REQ_STOPPED = frozenset({RequestedState.DISABLED, RequestedState.STOPPED})
_PREF_NONE = Preference.NONE
_PREF_TRY_NEXT = Preference.TRY_NEXT

# §6.4: locks that are safe to remove after the node was reset
_RECOVERY_SAFE_LOCKS = [
    "backup",
    "mounted",
    "migrate",
    "clone",
    "rollback",
    "snapshot",
    "snapshot-delete",
    "suspending",
    "suspended",
]


_Handler = Callable[[str, ResourceConfig, ServiceData, "LrmResult | None"], None]


class GroupMigrationAbort(HaError):
    pass


class Manager:
    """Runs the service state machine while its CRM holds the manager lock."""

    def __init__(self, env: Env, timing: Timing = REFERENCE_TIMING) -> None:
        self.env = env
        self.timing = timing
        old = env.read_manager_status()  # copied, never changed: the env may share it
        # §5.1: keep node states, service states, node requests and disarm
        self.ns = NodeStatus(env, dict(old.node_status), timing)
        self.ss: dict[str, ServiceData] = {sid: sd.copy() for sid, sd in old.service_status.items()}
        self.ms = ManagerStatus(master_node=env.nodename())
        if old.node_request is not None:
            self.ms.node_request = {n: dict(r) for n, r in old.node_request.items()}
        if old.disarm is not None:
            self.ms.disarm = dict(old.disarm)
        self.uids = UidGenerator(env.nodename())
        self.crs_mode: str | None = None
        self.crs = DatacenterConfig()
        self.update_crs_scheduler_mode()
        # §5.12: rounds the imbalance has stayed above the threshold
        self.sustained_imbalance_rounds = 0
        self.rules: CompiledRules | None = None
        self.last_rules_digest: str | None = None
        self.last_groups_digest: str | None = None
        self.last_services_digest: str | None = None
        self.group_migration_round = GROUP_MIGRATION_FIRST_ROUND
        self.usage: Usage = BasicUsage()
        self.crs_error: str | None = None  # why this round does not use the configured scheduler
        self.lrm_modes: dict[str, str] = {}
        self.sc = ServiceConfig()
        # §5.15: true once every online LRM confirmed disarm (read by the CRM)
        self.fully_disarmed = False
        self._handlers: dict[str, _Handler] = {
            S.STOPPED: self.next_state_stopped,
            S.STARTED: self.next_state_started,
            S.REQUEST_START: self.next_state_request_start,
            S.MIGRATE: self.next_state_migrate_relocate,
            S.RELOCATE: self.next_state_migrate_relocate,
            S.REQUEST_START_BALANCE: self.next_state_migrate_relocate,
            S.RECOVERY: self.next_state_recovery,
            S.REQUEST_STOP: self.next_state_request_stop,
            S.FREEZE: self.next_state_freeze,
            S.ERROR: self.next_state_error,
        }

    # -- bookkeeping -------------------------------------------------------

    def new_uid(self, state: str) -> str:
        return self.uids.new(state, self.env.get_time())

    def update_crs_scheduler_mode(self) -> None:
        dc = self.env.get_datacenter_settings()
        new_mode = dc.crs_mode or BASIC
        old_mode = self.crs_mode
        self.crs = dc
        self.rebalance_on_start = dc.rebalance_on_start
        if old_mode is None:
            if new_mode != "basic":
                self.env.log("info", f"using scheduler mode '{new_mode}'")
        elif new_mode == old_mode:
            return
        else:
            self.env.log("info", f"switching scheduler mode from '{old_mode}' to '{new_mode}'")
        self.crs_mode = new_mode

    def change_service_state(self, sid: str, new_state: ServiceState, **params: str | int) -> None:
        """§5.5: the only way a service state changes. Logs the reference line."""
        sd = self.ss[sid]
        old_state = sd.state
        if old_state == new_state:
            raise HaError(f"no state change for service '{sid}' ({old_state})")
        check_transition(SERVICE_TRANSITIONS, old_state, new_state, f"service '{sid}'")
        # all fields are dropped except node, failed_nodes and maintenance_node
        sd.state = new_state
        sd.uid = None
        sd.target = None
        sd.timeout = None
        sd.running = False
        sd.cmd = None
        text = ""
        for key in sorted(params):
            value = params[key]
            text += (", " if text else "") + f"{key} = {value}"
            if key == "node":
                sd.node = str(value)
            elif key == "target":
                sd.target = str(value)
            elif key == "timeout":
                sd.timeout = int(value)
            else:
                raise HaError(f"unknown service parameter '{key}'")
        self.usage.remove_service_usage(sid)
        self.usage.add_service_usage(sid, sd.state, sd.node, sd.target)
        sd.uid = self.new_uid(new_state)
        suffix = f"  ({text})" if text else ""
        self.env.log("info", f"service '{sid}': state changed from '{old_state}' to '{new_state}'{suffix}")

    def flush_master_status(self) -> None:
        self.ms.crs = self.crs_record()
        self.ms.node_status = self.ns.status
        self.ms.service_status = self.ss
        self.ms.timestamp = self.env.get_time()
        self.env.write_manager_status(self.ms)

    def read_lrm_status(self) -> tuple[dict[str, LrmResult], dict[str, str]]:
        """§4 Collection: merge every node's results by uid (first seen wins), record modes."""
        results: dict[str, LrmResult] = {}
        modes: dict[str, str] = {}
        for node in self.ns.list_nodes():
            status = self.env.read_lrm_status(node)
            modes[node] = status.mode or LrmMode.ACTIVE
            for uid, res in status.results.items():
                results.setdefault(uid, res)
        return results, modes

    def recompute_online_node_usage(self) -> None:
        """§5.10: a fresh usage of the configured scheduler (``basic`` when its init fails)."""
        env = self.env
        online = self.ns.list_online_nodes()
        mode = self.crs_mode or BASIC
        usage: Usage | None = None
        self.crs_error = None
        if mode in (STATIC, DYNAMIC):
            try:
                load = LoadUsage(mode, env.get_node_stats(mode), env.get_service_stats(mode), env.log)
                for node in online:
                    load.add_node(node)
                usage = load
            except HaError as e:
                env.log("warning", f"fallback to 'basic' scheduler mode, init for '{mode}' failed - {e}")
                self.crs_error = str(e)
        elif mode != BASIC:
            env.log("warning", f"got unknown scheduler mode '{mode}', using 'basic'")
            self.crs_error = f"unknown scheduler mode '{mode}'"
        if usage is None:
            usage = BasicUsage()
            for node in online:
                usage.add_node(node)
        usage.add_services(self.ss)
        guests = env.get_guests()
        for sid in sorted(guests):
            if sid not in self.ss:
                g = guests[sid]
                usage.add_guest_usage(sid, g.state, g.node, g.running)
        self.usage = usage

    @property
    def crs_mode_in_use(self) -> str:
        """The scheduler this round placed with (``basic`` after a failed init)."""
        return self.usage.mode

    def crs_record(self) -> dict[str, str] | None:
        """``manager_status.crs`` (ours, issue #14): what ``ha-manager status`` shows as the CRS in use.

        None while both the configured and the used mode are ``basic``: the status then
        holds the reference's fields only (§7.5).
        """
        configured = self.crs_mode or BASIC
        used = self.crs_mode_in_use
        if configured == BASIC and used == BASIC:
            return None
        out = {"mode": used, "configured": configured}
        if self.crs_error is not None and used != configured:
            out["error"] = self.crs_error
        return out

    def select_node(self, sid: str, cd: ResourceConfig, sd: ServiceData, pref: Preference) -> str | None:
        assert self.rules is not None
        return select_service_node(self.rules, self.usage, sid, cd, sd, pref, self.ss)

    # -- the round -----------------------------------------------------------

    def manage(self) -> None:
        """§5.2: one manager round."""
        env = self.env
        node_info, _ = env.get_node_info()
        nodes_changed = set(node_info) != set(self.ns.status)
        lrm_results, lrm_modes = self.read_lrm_status()
        self.lrm_modes = lrm_modes
        self.ns.update(node_info, lrm_modes)

        if not self.ns.node_is_operational(env.nodename()):
            env.log("info", "master seems offline")
            return

        self.update_crs_scheduler_mode()
        self.try_persistent_group_migration()

        sc = env.read_service_config().copy()  # this round edits it (group failback, recovery)
        self.sc = sc
        groups = env.read_group_config()

        if self.ms.disarm is None:
            self.add_and_remove_services(sc)

        self.recompute_online_node_usage()

        rules_conf = env.read_rules_config()
        apply_group_failback(groups, sc)
        if (
            self.rules is None
            or nodes_changed
            or rules_conf.digest != self.last_rules_digest
            or groups.digest != self.last_groups_digest
            or sc.digest != self.last_services_digest
        ):
            self.compile_rules(rules_conf, groups, sc)

        self.update_crm_commands()

        only: list[str] | None = None
        if self.ms.disarm is not None:
            deferred = self.handle_disarm()
            if deferred is None:
                return
            only = deferred
        else:
            self.auto_rebalance()
        self.fully_disarmed = False

        # the passes change services' states, never which services there are: sort once
        sids = sorted(self.ss) if only is None else [s for s in only if s in self.ss]
        ss, services = self.ss, sc.services
        handlers = self._handlers
        restarting = {node for node, mode in lrm_modes.items() if node and mode == _LRM_RESTART}
        while True:
            repeat = False
            recovering = [sid for sid in sids if ss[sid].state == _RECOVERY]
            if len(recovering) > 1:
                self.env.prefetch_locations(recovering)  # each is looked at (and moved) below
            for sid in sids:
                sd = ss[sid]
                cd = services.get(sid)
                if cd is None:
                    if sc.incomplete:
                        # SAFETY (issue #10): its section cannot be read now; taken for "disabled" it
                        # would be stopped. It keeps its state until the file reads again.
                        continue
                    cd = ResourceConfig(
                        sid=sid, type=sid.split(":")[0], name="", node="", state=RequestedState.DISABLED
                    )
                lrm_res = lrm_results.get(sd.uid) if sd.uid else None
                last_state = sd.state
                if last_state != _FENCE:  # a service to fence waits for the fencing pass
                    handler = handlers.get(last_state)
                    if handler is None:
                        raise HaError(f"unknown service state '{last_state}'")
                    handler(sid, cd, sd, lrm_res)
                if restarting and sd.node in restarting and sd.state in _FREEZABLE:
                    self.change_service_state(sid, S.FREEZE)
                if sd.state != last_state:
                    repeat = True
            if self.fencing_pass():
                repeat = True
            if not repeat:
                break

        self.flush_master_status()

    def compile_rules(self, rules_conf: RulesConfig, groups: GroupConfig, sc: ServiceConfig) -> None:
        rules = rules_conf.copy()
        add_group_rules(rules, groups, sc)
        nodes = self.ns.list_nodes()
        for msg in transform(rules, nodes):
            self.env.log("info", msg)
        self.rules = compile_rules(rules, nodes)
        self.last_rules_digest = rules_conf.digest
        self.last_groups_digest = groups.digest
        self.last_services_digest = sc.digest

    def add_and_remove_services(self, sc: ServiceConfig) -> None:
        """§5.4."""
        for sid in sorted(sid for sid in sc.services if sid not in self.ss):
            cd = sc.services[sid]
            if cd.state == RequestedState.IGNORED:
                continue
            self.env.log("info", f"adding new service '{sid}' on node '{cd.node}'")
            # assume it is running, so a running guest is not relocated when added
            state = S.REQUEST_START if cd.state == RequestedState.STARTED else S.REQUEST_STOP
            self.ss[sid] = ServiceData(state=state, node=cd.node, uid=self.new_uid(state))
        ignored, services = RequestedState.IGNORED, sc.services
        for sid in sorted(sid for sid in self.ss if sid not in services or services[sid].state == ignored):
            cd_or_none = sc.get(sid)
            if cd_or_none is None and sc.incomplete:
                # ours (issue #10): a config that could not be read whole may still configure it
                continue
            reason = "no config" if cd_or_none is None else "ignored state requested"
            self.env.log("info", f"removing stale service '{sid}' ({reason})")
            del self.ss[sid]

    def fencing_pass(self) -> bool:
        """§5.2 step 14b / §6.3. Returns True when something changed."""
        changed = False
        fenced: dict[str, bool] = {}
        for sid in sorted(sid for sid, sd in self.ss.items() if sd.state == _FENCE):
            sd = self.ss[sid]
            if sd.node not in fenced:
                fenced[sd.node] = self.ns.fence_node(sd.node)
            if not fenced[sd.node]:
                continue
            # SAFETY: recovery starts only after the node's agent lock was acquired,
            # i.e. the node released it cleanly or its watchdog has fired.
            self.change_service_state(sid, S.RECOVERY)
            changed = True
        for node in sorted(n for n in self.ns.status if n not in fenced):
            if self.ns.get_node_state(node) != NodeState.FENCE:
                continue
            self.env.log(
                "notice", f"node '{node}' in fence state but no services to-fence! admin interference?!"
            )
            if self.ns.fence_node(node):
                changed = True
        return changed

    # -- CRM commands (§5.6) ---------------------------------------------------

    def update_crm_commands(self) -> None:
        env, ns = self.env, self.ns
        for line in env.read_crm_commands().split("\n"):
            if not line:
                continue
            cmd = parse_crm_command(line)
            if cmd is None:
                env.log("err", f"unable to parse crm command: {line}")
                continue
            if cmd.kind in ("migrate", "relocate"):
                assert cmd.sid is not None and cmd.node is not None
                sd = self.ss.get(cmd.sid)
                if sd is None:
                    env.log("err", f"crm command error - no such service: {line}")
                elif not ns.node_is_online(cmd.node):
                    env.log("err", f"crm command error - node not online: {line}")
                elif cmd.node == sd.node:
                    env.log("info", f"ignore crm command - service already on target node: {line}")
                else:
                    self.queue_resource_motion(line, cmd.kind, cmd.sid, cmd.node)
            elif cmd.kind == "stop":
                assert cmd.sid is not None and cmd.arg is not None
                sd = self.ss.get(cmd.sid)
                if sd is None:
                    env.log("err", f"crm command error - no such service: {line}")
                else:
                    env.log("info", f"got crm command: {line}")
                    sd.cmd = ["stop", cmd.arg]
            elif cmd.kind == "enable-node-maintenance":
                assert cmd.node is not None
                if self.ms.disarm is not None:
                    env.log(
                        "warn", f"ignoring maintenance command for node {cmd.node} - HA stack is disarmed"
                    )
                    continue
                state = ns.get_node_state(cmd.node)
                if state == NodeState.ONLINE:
                    if self.ms.node_request is None:
                        self.ms.node_request = {}
                    self.ms.node_request.setdefault(cmd.node, {})["maintenance"] = 1
                elif state == NodeState.MAINTENANCE:
                    env.log("info", f"ignoring crm command - node {cmd.node} is already in maintenance state")
                else:
                    env.log("err", f"crm command error - node not online: {line}")
            elif cmd.kind == "disable-node-maintenance":
                assert cmd.node is not None
                state = ns.get_node_state(cmd.node)
                if state != NodeState.MAINTENANCE:
                    env.log(
                        "warn",
                        f"clearing maintenance of node {cmd.node} requested, but it's in state {state}",
                    )
                if self.ms.node_request is None:
                    self.ms.node_request = {}
                self.ms.node_request.setdefault(cmd.node, {}).pop("maintenance", None)
            elif cmd.kind == "disarm-ha":
                assert cmd.arg is not None
                self.disarm_command(cmd.arg)
            elif cmd.kind == "arm-ha":
                self.arm_command()

    # -- disarm / arm (§5.15) --------------------------------------------------

    def disarm_command(self, mode: str) -> None:
        env = self.env
        if self.ms.disarm is not None:
            env.log(
                "notice",
                f"ignoring disarm-ha command - already in disarm state ({self.ms.disarm.get('state')})",
            )
            return
        env.log("info", f"got crm command: disarm-ha {mode}")
        if mode == "ignore":
            for sid in sorted(self.ss):
                env.log("info", f"disarm: suspending HA tracking for service '{sid}'")
        self.ms.disarm = {"mode": mode, "state": "disarming"}

    def arm_command(self) -> None:
        env = self.env
        disarm = self.ms.disarm
        if disarm is None:
            env.log("notice", "ignoring arm-ha command - HA stack is not disarmed")
            return
        env.log("info", "got crm command: arm-ha")
        if disarm.get("mode") == "ignore":
            conf = env.read_service_config()
            for sid in sorted(self.ss):
                cd = conf.get(sid)
                sd = self.ss[sid]
                if cd is not None and cd.node != sd.node:
                    env.log(
                        "info",
                        f"service '{sid}': updating node '{sd.node}' => '{cd.node}' (changed while disarmed)",
                    )
                    sd.node = cd.node
        self.ms.disarm = None

    def handle_disarm(self) -> list[str] | None:
        """Run one disarm round. Returns the deferred sids (the round goes on for them only),
        or ``None`` when the round is over (status already written)."""
        env = self.env
        disarm = self.ms.disarm
        assert disarm is not None
        mode = disarm.get("mode")
        if mode not in ("freeze", "ignore"):
            env.log("err", f"unknown disarm-mode '{mode}', ignoring")
            return sorted(self.ss)
        deferred: list[str] = []
        for sid in sorted(self.ss):
            state = self.ss[sid].state
            if state in (S.FENCE, S.RECOVERY):
                env.log("warn", f"deferring disarm - service '{sid}' is in '{state}' state")
                deferred.append(sid)
            elif state in (S.MIGRATE, S.RELOCATE):
                env.log("info", f"deferring disarm - service '{sid}' is in '{state}' state")
                deferred.append(sid)
        if deferred:
            # SAFETY: watchdogs stay armed while anything is being fenced, recovered or moved
            return deferred
        freezable = (S.STARTED, S.STOPPED, S.REQUEST_STOP, S.REQUEST_START, S.REQUEST_START_BALANCE)
        for sid in sorted(self.ss):
            sd = self.ss[sid]
            sd.target = sd.timeout = None
            sd.running = False
            sd.failed_nodes = sd.cmd = None
            if mode == "freeze" and sd.state in freezable:
                env.log("info", f"disarm: freezing service '{sid}' (was '{sd.state}')")
                sd.state = S.FREEZE
                sd.uid = self.new_uid(S.FREEZE)
        online = [n for n, st in self.ns.status.items() if st == NodeState.ONLINE]
        if disarm.get("state") != "disarmed" and all(self.lrm_modes.get(n) == LrmMode.DISARM for n in online):
            env.log("info", "all LRMs disarmed, HA stack is now fully disarmed")
            disarm["state"] = "disarmed"
        self.fully_disarmed = disarm.get("state") == "disarmed"
        self.flush_master_status()
        return None

    # -- automatic rebalancing (§5.12) ---------------------------------------------

    def auto_rebalance(self) -> None:
        """Once per round: move one service (bundle) when the imbalance stays above the threshold."""
        dc = self.crs
        if not dc.auto_rebalance or self.crs_mode not in (STATIC, DYNAMIC):
            return
        for sd in self.ss.values():
            if sd.state in (S.MIGRATE, S.RELOCATE) or (sd.cmd and sd.cmd[0] in ("migrate", "relocate")):
                return  # a motion is pending: wait, without touching the counter
        imbalance = self.usage.imbalance()
        if imbalance <= dc.auto_rebalance_threshold:
            self.sustained_imbalance_rounds = 0
            return
        self.sustained_imbalance_rounds += 1
        if self.sustained_imbalance_rounds < dc.auto_rebalance_hold_duration:
            return
        self.sustained_imbalance_rounds = 0
        candidates = stationary_bundles(self.rules or CompiledRules(), self.ss, self.usage.nodes.keys())
        best = self.usage.select_best_balancing_migration(candidates, dc.auto_rebalance_method)
        if best is None:
            return
        if (imbalance - best.imbalance) / imbalance < dc.auto_rebalance_margin:
            return
        cd = self.sc.get(best.sid)
        rtype = cd.type if cd is not None else best.sid.split(":")[0]
        task = "migrate" if rtype == "vm" else "relocate"
        self.env.log(
            "info",
            f"auto rebalance - {task} {best.sid} to {best.target} "
            f"(expected change for imbalance from {imbalance:.2f} to {best.imbalance:.2f})",
        )
        self.queue_resource_motion(f"{task} {best.sid} {best.target}", task, best.sid, best.target)

    def queue_resource_motion(self, line: str, task: str, sid: str, target: str) -> None:
        """§5.6 *queue motion*: check negative affinity, comigrate positive partners (ha/motion.py)."""
        env = self.env
        motion = check_motion(self.rules or CompiledRules(), self.ss, self.sc, sid, target)
        if motion.blocking:
            csid = motion.blocking[0]
            env.log(
                "err",
                f"crm command '{line}' error - service '{csid}' on node '{target}' in negative "
                f"affinity with service '{sid}'",
            )
            return
        env.log("info", f"got crm command: {line}")
        self.ss[sid].cmd = [task, target]
        for csid in motion.comigrated:
            env.log(
                "info",
                f"crm command '{line}' - {task} service '{csid}' to node '{target}' "
                f"(service '{csid}' in positive affinity with service '{sid}')",
            )
            self.ss[csid].cmd = [task, target]

    # -- state handlers (§5.7) -------------------------------------------------

    def next_state_request_start(
        self, sid: str, cd: ResourceConfig, sd: ServiceData, lrm_res: LrmResult | None
    ) -> None:
        current = sd.node
        if self.rebalance_on_start:
            selected = self.select_node(sid, cd, sd, Preference.BEST_SCORE)
            if selected is not None:
                which = "new" if selected != current else "current"
                self.env.log(
                    "info", f"service {sid}: re-balance selected {which} node {selected} for startup"
                )
                if selected != current:
                    self.change_service_state(sid, S.REQUEST_START_BALANCE, node=current, target=selected)
                    return
        self.change_service_state(sid, S.STARTED, node=current)

    def _move_request(self, sid: str, sd: ServiceData, task: str, target: str) -> bool:
        """Common checks of a pending migrate/relocate; True when the move may go ahead."""
        if not self.ns.node_is_online(target):
            self.env.log("err", f"ignore service '{sid}' {task} request - node '{target}' not online")
            return False
        if sd.node == target:
            self.env.log(
                "info", f"ignore service '{sid}' {task} request - service already on node '{target}'"
            )
            return False
        return True

    def next_state_stopped(
        self, sid: str, cd: ResourceConfig, sd: ServiceData, lrm_res: LrmResult | None
    ) -> None:
        env, ns = self.env, self.ns
        if sd.node != cd.node:
            # can happen after fencing a node with active migrations
            env.log("info", f"fixup service '{sid}' location ({sd.node} => {cd.node})")
            sd.node = cd.node
        if sd.cmd:
            task, arg = sd.cmd[0], sd.cmd[1] if len(sd.cmd) > 1 else ""
            if task in ("migrate", "relocate"):
                if self._move_request(sid, sd, task, arg):
                    self.change_service_state(sid, S(task), node=sd.node, target=arg)
                    return
            elif task == "stop":
                env.log("info", f"ignore service '{sid}' {task} request - service already stopped")
            else:
                env.log("err", f"unknown command '{task}' for service '{sid}'")
            sd.cmd = None
        if cd.state == RequestedState.DISABLED:
            return
        if ns.node_is_offline_delayed(sd.node) and ns.get_node_state(sd.node) != NodeState.MAINTENANCE:
            self.change_service_state(sid, S.FENCE)
            return
        if cd.state == RequestedState.STOPPED:
            return
        if cd.state == RequestedState.STARTED:
            self.change_service_state(sid, S.REQUEST_START, node=sd.node)
            return
        env.log("err", f"service '{sid}' - unknown state '{cd.state}' in service configuration")

    def next_state_started(
        self, sid: str, cd: ResourceConfig, sd: ServiceData, lrm_res: LrmResult | None
    ) -> None:
        env, ns = self.env, self.ns
        if ns.status.get(sd.node) != _ONLINE:  # not ns.node_is_online(sd.node), inlined: every pass
            if ns.node_is_offline_delayed(sd.node):
                self.change_service_state(sid, S.FENCE)
            if ns.get_node_state(sd.node) != NodeState.MAINTENANCE:
                return
            # quirk (§5.7): on a maintenance node processing continues, even after 'fence'
            sd.maintenance_node = sd.node

        if cd.state in _REQ_STOPPED:
            self.change_service_state(sid, S.REQUEST_STOP)
            return

        if cd.state != _REQ_STARTED:
            env.log("err", f"service '{sid}' - unknown state '{cd.state}' in service configuration")
            return

        if sd.cmd:
            task, arg = sd.cmd[0], sd.cmd[1] if len(sd.cmd) > 1 else ""
            if task in ("migrate", "relocate"):
                if self._move_request(sid, sd, task, arg):
                    env.log("info", f"{task} service '{sid}' to node '{arg}'")
                    self.change_service_state(sid, S(task), node=sd.node, target=arg)
            elif task == "stop":
                timeout = _int_or_zero(arg)
                if timeout == 0:
                    env.log("info", f"request immediate service hard-stop for service '{sid}'")
                else:
                    env.log("info", f"request graceful stop with timeout '{arg}' for service '{sid}'")
                self.change_service_state(sid, S.REQUEST_STOP, timeout=timeout)
                env.update_service_config(sid, {"state": RequestedState.STOPPED}, [])
            else:
                env.log("err", f"unknown command '{task}' for service '{sid}'")
            sd.cmd = None
            return

        try_next = False
        if lrm_res is not None:
            ec = lrm_res.exit_code
            if ec == ExitCode.SUCCESS:
                if sd.failed_nodes is not None:
                    env.log(
                        "info",
                        f"relocation policy successful for '{sid}' on node '{sd.node}', "
                        f"failed nodes: {', '.join(sd.failed_nodes)}",
                    )
                sd.failed_nodes = None
                sd.running = True
            elif ec in (ExitCode.ERROR, ExitCode.EWRONG_NODE):
                sd.running = False
                sd.failed_nodes = [*(sd.failed_nodes or []), sd.node]
                if len(sd.failed_nodes) <= cd.max_relocate:
                    try_next = True
                    env.log(
                        "warning", f"starting service {sid} on node '{sd.node}' failed, relocating service."
                    )
                else:
                    env.log(
                        "err",
                        f"recovery policy for service {sid} failed, entering error state. "
                        f"Failed nodes: {', '.join(sd.failed_nodes)}",
                    )
                    self.change_service_state(sid, S.ERROR)
                    return
            else:
                sd.failed_nodes = [*(sd.failed_nodes or []), sd.node]
                env.log("err", f"service '{sid}' got unrecoverable error (exit code {ec})")
                self.change_service_state(sid, S.ERROR)
                return

        node = self.select_node(sid, cd, sd, _PREF_TRY_NEXT if try_next else _PREF_NONE)
        if node is not None and node != sd.node:
            self.usage.add_service_usage_to_node(node, sid)
            fallback = sd.maintenance_node
            if fallback is not None:
                if node == fallback:
                    env.log(
                        "info",
                        f"moving service '{sid}' back to '{fallback}', node came back from maintenance.",
                    )
                    sd.maintenance_node = None
                elif sd.node != fallback:
                    env.log("info", f"dropping maintenance fallback node '{fallback}' for '{sid}'")
                    sd.maintenance_node = None
            if cd.type == "vm":
                env.log("info", f"migrate service '{sid}' to node '{node}' (running)")
                self.change_service_state(sid, S.MIGRATE, node=sd.node, target=node)
            else:
                env.log("info", f"relocate service '{sid}' to node '{node}'")
                self.change_service_state(sid, S.RELOCATE, node=sd.node, target=node)
            return
        if try_next and node is None:
            env.log(
                "warning",
                f"Start Error Recovery: Tried all available nodes for service '{sid}', retry start on "
                f"current node. Tried nodes: {', '.join(sd.failed_nodes or [])}",
            )
        if sd.maintenance_node is not None and sd.node == sd.maintenance_node:
            if ns.get_node_state(sd.node) == NodeState.ONLINE:
                # the service never left its maintenance node (e.g. the whole cluster
                # was shut down under the migrate policy): the fallback is stale
                env.log(
                    "info",
                    f"service '{sid}': clearing stale maintenance node '{sd.maintenance_node}' setting "
                    "(is current node)",
                )
                sd.maintenance_node = None
        # re-issue the request so the LRM checks again (restarts a crashed guest),
        # without losing a result that was just consumed
        if lrm_res is not None:
            sd.uid = self.new_uid(sd.state)

    def next_state_request_stop(
        self, sid: str, cd: ResourceConfig, sd: ServiceData, lrm_res: LrmResult | None
    ) -> None:
        if lrm_res is not None:
            if lrm_res.exit_code == ExitCode.SUCCESS:
                self.change_service_state(sid, S.STOPPED)
            else:
                self.env.log("err", f"service '{sid}' stop failed (exit code {lrm_res.exit_code})")
                self.change_service_state(sid, S.ERROR)
            return
        if self.ns.node_is_offline_delayed(sd.node):
            self.change_service_state(sid, S.FENCE)

    def next_state_migrate_relocate(
        self, sid: str, cd: ResourceConfig, sd: ServiceData, lrm_res: LrmResult | None
    ) -> None:
        env = self.env
        if lrm_res is not None:
            ec = lrm_res.exit_code
            req = S.STARTED if cd.state == RequestedState.STARTED else S.REQUEST_STOP
            if ec == ExitCode.SUCCESS:
                assert sd.target is not None
                self.change_service_state(sid, req, node=sd.target)
                return
            if ec == ExitCode.EWRONG_NODE:
                env.log("err", f"service '{sid}' - migration failed: service registered on wrong node!")
                self.change_service_state(sid, S.ERROR)
            elif ec == ExitCode.IGNORED:
                env.log(
                    "info", f"service '{sid}' - rebalance-on-start request ignored - service already running"
                )
                self.change_service_state(sid, req, node=sd.node)
            else:
                env.log("err", f"service '{sid}' - migration failed (exit code {ec})")
                self.change_service_state(sid, req, node=sd.node)
                return
        if self.ns.node_is_offline_delayed(sd.node) and sd.state != S.FENCE:
            self.change_service_state(sid, S.FENCE)

    def next_state_freeze(
        self, sid: str, cd: ResourceConfig, sd: ServiceData, lrm_res: LrmResult | None
    ) -> None:
        if self.lrm_modes.get(sd.node) == LrmMode.ACTIVE:
            self.change_service_state(
                sid, S.STARTED if cd.state == RequestedState.STARTED else S.REQUEST_STOP
            )

    def next_state_error(
        self, sid: str, cd: ResourceConfig, sd: ServiceData, lrm_res: LrmResult | None
    ) -> None:
        # the only way out of 'error' is through 'disabled' (§5.8)
        if cd.state == RequestedState.DISABLED:
            sd.failed_nodes = None
            self.change_service_state(sid, S.STOPPED)

    def next_state_recovery(
        self, sid: str, cd: ResourceConfig, sd: ServiceData, lrm_res: LrmResult | None
    ) -> None:
        """§6.4."""
        env = self.env
        fenced_node = sd.node
        where = env.service_location(sid)
        if where is not None and where != fenced_node:
            if self._recover_at_location(sid, cd, sd, where):
                return
            fenced_node = where  # fenced now: nothing runs there, the location may move on
        # usage is kept current by change_service_state; no from-scratch recompute
        # per recovered service (that would make a recovery round quadratic)
        node = self.select_node(sid, cd, sd, Preference.BEST_SCORE)
        if node is not None:
            if node == fenced_node:
                env.log(
                    "info",
                    f"recover service '{sid}' to previous failed and fenced node '{fenced_node}' again",
                )
            else:
                env.log("info", f"recover service '{sid}' from fenced node '{fenced_node}' to node '{node}'")
            self.fence_recovery_cleanup(sid, cd)
            env.steal_service(sid, fenced_node, node)
            self.usage.add_service_usage_to_node(node, sid)
            cd.node = sd.node = node
            new_state = S.STARTED if cd.state == RequestedState.STARTED else S.REQUEST_STOP
            self.change_service_state(sid, new_state, node=node)
            return
        env.log(
            "err",
            f"recovering service '{sid}' from fenced node '{fenced_node}' failed, no recovery node found",
        )
        if cd.state == RequestedState.DISABLED:
            sd.failed_nodes = None
            self.change_service_state(sid, S.STOPPED)

    def _recover_at_location(self, sid: str, cd: ResourceConfig, sd: ServiceData, where: str) -> bool:
        """A recovery whose service's location names another node than the fenced one.

        Ours (found by issue #15's 20-node runs; the reference's steal would die on
        every round and stop the whole manager): a master moved the location (a
        recovery, or the end of a migration) and died before its manager_status write.
        True when handled here (recovered to ``where``, or waiting); False when
        ``where`` is fenced now and the normal recovery may move the service on.

        SAFETY: the location is the service's one owner; it may even run there (a
        live migration that completed). So it is recovered *to* that node while the
        node is up, and moved elsewhere only after the node was fenced (its agent
        lock taken: its watchdog fired, it runs nothing).
        """
        env = self.env
        state = self.ns.get_node_state(where)
        if state in (NodeState.ONLINE, NodeState.MAINTENANCE):
            fenced = sd.node
            env.log(
                "info",
                f"recover service '{sid}' from fenced node '{fenced}' to node '{where}' (its location)",
            )
            self.fence_recovery_cleanup(sid, cd)
            self.usage.add_service_usage_to_node(where, sid)
            cd.node = sd.node = where
            new_state = S.STARTED if cd.state == RequestedState.STARTED else S.REQUEST_STOP
            self.change_service_state(sid, new_state, node=where)
            return True
        if state != NodeState.FENCE:
            if not self.ns.node_is_offline_delayed(where):
                return True  # a blip? the fence delay first (§6.2), as for any node
            env.log(
                "warning",
                f"service '{sid}' is located on node '{where}' ({state}), not on fenced node '{sd.node}':"
                f" recovering it only once '{where}' is fenced",
            )
            if env.get_ha_agent_lock(where):
                # its agent lock is ours (fenced before, or it never held one): it runs nothing
                return False
        return not self.ns.fence_node(where)

    def fence_recovery_cleanup(self, sid: str, cd: ResourceConfig) -> None:
        """Remove the first leftover lock that is safe after a node reset (§6.4)."""
        plugin = self.env.resource_plugin(cd.type)
        if plugin is None:
            return
        removed = plugin.remove_locks(self.env, sid, _RECOVERY_SAFE_LOCKS)
        if removed is not None:
            self.env.log(
                "warning",
                f"removed leftover lock '{removed}' from recovered service '{sid}' to allow its start.",
            )

    # -- HA groups -> rules (§5.14) -------------------------------------------

    def try_persistent_group_migration(self) -> None:
        env = self.env
        groups = env.read_group_config()
        if not groups.groups or not env.migrate_groups:
            return
        self.group_migration_round -= 1
        if self.group_migration_round > 0:
            return
        self.group_migration_round = GROUP_MIGRATION_RETRY_ROUNDS
        env.log("notice", "start ha group migration...")
        try:
            self.check_group_migration_preconditions()
            self.migrate_groups_persistently(groups)
        except GroupMigrationAbort as e:
            env.log("err", f"abort ha groups migration: {e}")
            env.log("err", "ha groups migration failed")
            env.log(
                "notice", f"retry ha groups migration in {GROUP_MIGRATION_RETRY_ROUNDS} rounds (~ 60 seconds)"
            )

    def check_group_migration_preconditions(self) -> None:
        env = self.env
        if not env.quorate():
            raise GroupMigrationAbort("cluster is not quorate")
        nodes = self.ns.list_nodes()
        if not nodes:
            raise GroupMigrationAbort("node list is empty")
        for node in nodes:
            state = self.ns.get_node_state(node)
            env.log("notice", f"ha groups migration: node '{node}' is in state '{state}'")
            if state != NodeState.ONLINE:
                raise GroupMigrationAbort(f"node '{node}' is not online")
            lrm = env.read_lrm_status(node)
            if not lrm.state or not lrm.mode:
                raise GroupMigrationAbort(f"could not retrieve state for lrm '{node}'")
            env.log(
                "notice", f"ha groups migration: lrm '{node}' is in state '{lrm.state}' and mode '{lrm.mode}'"
            )
            idle = lrm.state == LrmState.WAIT_FOR_AGENT_LOCK and count_active_services(self.ss, node) == 0
            if lrm.state != LrmState.ACTIVE and not idle:
                raise GroupMigrationAbort(f"lrm '{node}' is not in state 'active' or 'idle'")
            if lrm.mode != LrmMode.ACTIVE:
                raise GroupMigrationAbort(f"lrm '{node}' is not in mode 'active'")
            version = env.get_node_version(node)
            if not version:
                raise GroupMigrationAbort(f"could not retrieve version from node '{node}'")
            env.log("notice", f"ha groups migration: node '{node}' has version '{version}'")
            if not version_at_least(version, GROUP_MIGRATION_MIN_VERSION):
                raise GroupMigrationAbort(
                    f"node '{node}' needs at least pve-manager version '{GROUP_MIGRATION_MIN_VERSION}'"
                )

    def migrate_groups_persistently(self, groups: GroupConfig) -> None:
        env = self.env
        sc = env.read_service_config().copy()
        rules = env.read_rules_config().copy()
        add_group_rules(rules, groups, sc)
        env.write_rules_config(rules)
        env.log("notice", "ha groups migration: migration to rules config successful")
        for cd in sc.services.values():
            if cd.group is None:
                continue
            group = groups.groups.get(cd.group)
            if group is not None and group.nofailback:
                cd.failback = False
            cd.group = None
        env.write_service_config(sc)
        env.log("notice", "ha groups migration: migration to resources config successful")
        env.delete_group_config()
        env.log("notice", "ha groups migration: group config deletion successful")
        env.log("notice", "ha groups migration successful")


def _int_or_zero(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0
