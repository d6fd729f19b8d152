"""CRM commands (§5.6): validated, then queued in ``crm_commands`` for the master."""

from __future__ import annotations

from dataclasses import dataclass, field

from admin.configfiles import check_node, normalize_sid, read_config, read_rules
from admin.errors import AdminError, ExitCode
from ha.config.crm_commands import parse_crm_command
from ha.motion import check_motion
from ha.rules import compile_rules, transform
from ha.states import NodeState, RequestedState
from store import records as rec
from store.base import Store


@dataclass
class Motion:
    """What a migrate/relocate will drag along or run into (the reference's motion info)."""

    line: str
    comigrated: list[str] = field(default_factory=list)
    blocking: list[str] = field(default_factory=list)


def motion_info(store: Store, task: str, sid: str, node: str, nodes: list[str]) -> Motion:
    """Positive partners that move along, negative partners that block ``node`` (§5.6).

    The master's own checks (ha/motion.py), on the records it reads: what the CRM
    will do with the command, said before it is queued.
    """
    ms, _ = rec.read_manager_status(store)
    rules, _ = read_rules(store)
    conf, _ = read_config(store)
    known = sorted(set(nodes) | set(ms.node_status))
    transform(rules, known)
    check = check_motion(compile_rules(rules, known), ms.service_status, conf, sid, node)
    return Motion(f"{task} {sid} {node}", check.comigrated, check.blocking)


def crm_command(store: Store, line: str, nodes: list[str]) -> None:
    """Validate and queue one crm command line (§5.6 grammar).

    Refused (nothing queued) when the CRM would only log an error or ignore
    it: unknown service or node, a service HA ignores, a target node that is
    not online, a service already on the target, maintenance while disarmed,
    disarm while disarmed, arm while armed.
    """
    cmd = parse_crm_command(line)
    if cmd is None:
        raise AdminError(f"invalid crm command '{line}'", ExitCode.USAGE)
    ms, _ = rec.read_manager_status(store)
    if cmd.sid is not None:
        sid = normalize_sid(cmd.sid)
        conf, _ = read_config(store)
        cd = conf.services.get(sid)
        if cd is None:
            raise AdminError(f"no such resource '{cmd.sid}'", ExitCode.NOT_FOUND)
        if cd.state == RequestedState.IGNORED:
            raise AdminError(f"resource '{sid}' is ignored by HA (state ignored)", ExitCode.REFUSED)
    if cmd.node is not None:
        check_node(cmd.node, nodes)
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
        if ms.node_status and state not in (NodeState.ONLINE, NodeState.MAINTENANCE):
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
    motion = motion_info(store, task, sid, node, nodes)
    crm_command(store, line, nodes)
    return motion
