"""CRM commands (§5.6): validated, then queued in ``crm_commands`` for the master."""

from __future__ import annotations

from dataclasses import dataclass, field

from admin.configfiles import check_node, normalize_sid, read_config, read_rules
from admin.errors import AdminError, ExitCode
from ha.config.crm_commands import parse_crm_command
from ha.config.resources import ServiceConfig
from ha.motion import check_motion
from ha.records import ManagerStatus
from ha.rules import compile_rules, transform
from ha.states import NodeState, RequestedState, ServiceState
from store import records as rec
from store.base import Store


@dataclass
class Motion:
    """What a migrate/relocate will drag along or run into (the reference's motion info)."""

    line: str
    comigrated: list[str] = field(default_factory=list)
    blocking: list[str] = field(default_factory=list)


def motion_info(
    store: Store,
    task: str,
    sid: str,
    node: str,
    nodes: list[str],
    ms: ManagerStatus | None = None,
    conf: ServiceConfig | None = None,
) -> Motion:
    """Positive partners that move along, negative partners that block ``node`` (§5.6).

    The master's own checks (ha/motion.py), on the records it reads (MS and CONF when
    the caller read them already): what the CRM will do with the command, said before
    it is queued.
    """
    if ms is None:
        ms, _ = rec.read_manager_status(store)
    rules, _ = read_rules(store)
    if conf is None:
        conf, _ = read_config(store)
    known = sorted(set(nodes) | set(ms.node_status))
    transform(rules, known)
    check = check_motion(compile_rules(rules, known), ms.service_status, conf, sid, node)
    return Motion(f"{task} {sid} {node}", check.comigrated, check.blocking)


def _check_service_takes_commands(kind: str, sid: str, ms: ManagerStatus) -> None:
    """The manager acts on a service's command only in ``started`` or ``stopped`` (§5.8, §5.9).

    In any other state the command would sit in the service's record until the
    next state change drops it; while the stack is disarmed every command is
    cleared (§5.15). Those are refused here instead of queued and dropped.
    """
    if ms.disarm is not None:
        raise AdminError(
            f"cannot {kind} '{sid}': the HA stack is disarmed ({ms.disarm.get('state')}); arm it first",
            ExitCode.REFUSED,
        )
    sd = ms.service_status.get(sid)
    if sd is None:
        raise AdminError(
            f"cannot {kind} '{sid}': the manager has not taken it over yet, try again in a moment",
            ExitCode.REFUSED,
        )
    if sd.state == ServiceState.ERROR:
        raise AdminError(
            f"cannot {kind} '{sid}': it is in error state; disable it first"
            f" (ha-manager set {sid} --state disabled)",
            ExitCode.REFUSED,
        )
    if sd.state not in (ServiceState.STARTED, ServiceState.STOPPED):
        raise AdminError(
            f"cannot {kind} '{sid}' while it is in state '{sd.state}';"
            " try again once it is started or stopped",
            ExitCode.REFUSED,
        )
    if kind == "stop" and sd.state == ServiceState.STOPPED:
        raise AdminError(f"resource '{sid}' is already stopped", ExitCode.REFUSED)


def crm_command(
    store: Store,
    line: str,
    nodes: list[str],
    ms: ManagerStatus | None = None,
    conf: ServiceConfig | None = None,
) -> None:
    """Validate and queue one crm command line (§5.6 grammar).

    Refused (nothing queued) when the CRM would only log an error or ignore
    it (issue #10, "refuse, never drop"): unknown service or node, a service
    HA ignores, a service the manager does not take commands for now (not yet
    managed, in error, in a transition, stopped for ``stop``, any while the HA
    stack is disarmed), a target node that is not online, a service already
    on the target, maintenance while disarmed or on a node already in
    maintenance, disarm while disarmed, arm while armed.
    """
    cmd = parse_crm_command(line)
    if cmd is None:
        raise AdminError(f"invalid crm command '{line}'", ExitCode.USAGE)
    if ms is None:
        ms, _ = rec.read_manager_status(store)
    if cmd.sid is not None:
        sid = normalize_sid(cmd.sid)
        if conf is None:
            conf, _ = read_config(store)
        cd = conf.services.get(sid)
        if cd is None:
            raise AdminError(f"no such resource '{cmd.sid}'", ExitCode.NOT_FOUND)
        if cd.state == RequestedState.IGNORED:
            raise AdminError(f"resource '{sid}' is ignored by HA (state ignored)", ExitCode.REFUSED)
    if cmd.node is not None:
        check_node(cmd.node, nodes)
    if cmd.sid is not None:
        _check_service_takes_commands(cmd.kind, normalize_sid(cmd.sid), ms)
    if cmd.kind in ("migrate", "relocate"):
        assert cmd.node is not None and cmd.sid is not None
        state = ms.node_status.get(cmd.node)
        if ms.node_status and state != NodeState.ONLINE:
            raise AdminError(
                f"node '{cmd.node}' is not online (state {state or 'unknown'})", ExitCode.REFUSED
            )
        sd = ms.service_status.get(normalize_sid(cmd.sid))
        if sd is not None and sd.node == cmd.node and not sd.target:
            raise AdminError(f"resource '{cmd.sid}' is already on node '{cmd.node}'", ExitCode.REFUSED)
    elif cmd.kind == "stop":
        assert cmd.arg is not None
        if not cmd.arg.isdigit():
            raise AdminError(f"timeout must be a number of seconds >= 0, got '{cmd.arg}'", ExitCode.USAGE)
    elif cmd.kind == "enable-node-maintenance":
        assert cmd.node is not None
        if ms.disarm is not None:
            raise AdminError("cannot enable maintenance: the HA stack is disarmed", ExitCode.REFUSED)
        state = ms.node_status.get(cmd.node)
        if state == NodeState.MAINTENANCE:
            raise AdminError(f"node '{cmd.node}' is already in maintenance", ExitCode.REFUSED)
        if ms.node_status and state != NodeState.ONLINE:
            raise AdminError(
                f"node '{cmd.node}' is not online (state {state or 'unknown'})", ExitCode.REFUSED
            )
    elif cmd.kind == "disarm-ha":
        if ms.disarm is not None:
            raise AdminError(f"the HA stack is already disarmed ({ms.disarm.get('state')})", ExitCode.REFUSED)
    elif cmd.kind == "arm-ha":
        if ms.disarm is None:
            raise AdminError("the HA stack is not disarmed", ExitCode.REFUSED)
    rec.queue_crm_command(store, line)


def move(store: Store, task: str, sid: str, node: str, nodes: list[str]) -> Motion:
    """``migrate``/``relocate``: validate, queue, and say what moves along or blocks.

    As in the reference the command is queued even when a negatively affine
    resource blocks the target (the CRM then rejects it); the caller reports
    the blockers and fails.
    """
    sid = normalize_sid(sid)
    if task not in ("migrate", "relocate"):
        raise AdminError(f"unknown motion '{task}'", ExitCode.USAGE)
    line = f"{task} {sid} {node}"
    # one read of each record for both steps (issue #15: each is a parse of thousands of services)
    ms, _ = rec.read_manager_status(store)
    conf, _ = read_config(store)
    motion = motion_info(store, task, sid, node, nodes, ms, conf)
    crm_command(store, line, nodes, ms, conf)
    return motion
