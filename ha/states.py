"""States as data (STYLE.md "States are data").

Each state machine is a StrEnum plus a table of allowed transitions. The
single functions that change a state (``Manager.change_service_state``,
``CRM.set_local_status``, ``LRM.set_local_status``,
``NodeStatus.set_node_state``) validate against these tables and emit the
reference's log line.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class ServiceState(StrEnum):
    """CRM-side service states (BEHAVIOUR.md §5.5, §5.7)."""

    STOPPED = "stopped"
    REQUEST_STOP = "request_stop"
    REQUEST_START = "request_start"
    REQUEST_START_BALANCE = "request_start_balance"
    STARTED = "started"
    FENCE = "fence"
    RECOVERY = "recovery"
    MIGRATE = "migrate"
    RELOCATE = "relocate"
    FREEZE = "freeze"
    ERROR = "error"


S = ServiceState

# Which handler may move a service where (§5.7, §6.3, §6.4, §5.2 step 14a freeze).
SERVICE_TRANSITIONS: dict[ServiceState, frozenset[ServiceState]] = {
    S.STOPPED: frozenset({S.MIGRATE, S.RELOCATE, S.FENCE, S.REQUEST_START, S.FREEZE}),
    S.REQUEST_START: frozenset({S.STARTED, S.REQUEST_START_BALANCE}),
    S.REQUEST_START_BALANCE: frozenset({S.STARTED, S.REQUEST_STOP, S.ERROR, S.FENCE}),
    S.STARTED: frozenset({S.FENCE, S.REQUEST_STOP, S.MIGRATE, S.RELOCATE, S.ERROR, S.FREEZE}),
    S.REQUEST_STOP: frozenset({S.STOPPED, S.ERROR, S.FENCE, S.FREEZE}),
    S.MIGRATE: frozenset({S.STARTED, S.REQUEST_STOP, S.ERROR, S.FENCE}),
    S.RELOCATE: frozenset({S.STARTED, S.REQUEST_STOP, S.ERROR, S.FENCE}),
    # fence -> migrate/relocate/request_stop: the maintenance-node quirk of §5.7 "started" step 1,
    # where the handler continues after the fence change (visible in test shutdown-policy4).
    S.FENCE: frozenset({S.RECOVERY, S.MIGRATE, S.RELOCATE, S.REQUEST_STOP}),
    S.RECOVERY: frozenset({S.STARTED, S.REQUEST_STOP, S.STOPPED}),
    S.FREEZE: frozenset({S.STARTED, S.REQUEST_STOP}),
    S.ERROR: frozenset({S.STOPPED, S.FENCE}),
}


class RequestedState(StrEnum):
    """The ``state`` property of a resource in resources.cfg (§7.1)."""

    STARTED = "started"
    STOPPED = "stopped"
    DISABLED = "disabled"
    IGNORED = "ignored"


class CrmState(StrEnum):
    """CRM daemon states (§3.1.1). ``startup`` is the initial pseudo-state."""

    STARTUP = "startup"
    WAIT_FOR_QUORUM = "wait_for_quorum"
    MASTER = "master"
    LOST_MANAGER_LOCK = "lost_manager_lock"
    SLAVE = "slave"


C = CrmState
CRM_TRANSITIONS: dict[CrmState, frozenset[CrmState]] = {
    C.STARTUP: frozenset({C.WAIT_FOR_QUORUM}),
    C.WAIT_FOR_QUORUM: frozenset({C.MASTER, C.SLAVE}),
    C.SLAVE: frozenset({C.MASTER, C.WAIT_FOR_QUORUM}),
    C.MASTER: frozenset({C.LOST_MANAGER_LOCK, C.WAIT_FOR_QUORUM}),
    C.LOST_MANAGER_LOCK: frozenset({C.MASTER, C.WAIT_FOR_QUORUM}),
}


class LrmState(StrEnum):
    """LRM daemon states (§3.2.1)."""

    STARTUP = "startup"
    WAIT_FOR_AGENT_LOCK = "wait_for_agent_lock"
    ACTIVE = "active"
    LOST_AGENT_LOCK = "lost_agent_lock"
    MAINTENANCE = "maintenance"


L = LrmState
LRM_TRANSITIONS: dict[LrmState, frozenset[LrmState]] = {
    L.STARTUP: frozenset({L.WAIT_FOR_AGENT_LOCK}),
    L.WAIT_FOR_AGENT_LOCK: frozenset({L.ACTIVE}),
    L.ACTIVE: frozenset({L.LOST_AGENT_LOCK, L.MAINTENANCE, L.WAIT_FOR_AGENT_LOCK}),
    L.LOST_AGENT_LOCK: frozenset({L.ACTIVE}),
    L.MAINTENANCE: frozenset({L.LOST_AGENT_LOCK, L.ACTIVE, L.WAIT_FOR_AGENT_LOCK}),
}


class LrmMode(StrEnum):
    """Modes an LRM publishes in its lrm_status (§3.2.1)."""

    ACTIVE = "active"
    RESTART = "restart"
    SHUTDOWN = "shutdown"
    MAINTENANCE = "maintenance"
    DISARM = "disarm"


class NodeState(StrEnum):
    """CRM view of a node (§6.1)."""

    ONLINE = "online"
    MAINTENANCE = "maintenance"
    UNKNOWN = "unknown"
    FENCE = "fence"
    GONE = "gone"


N = NodeState
NODE_TRANSITIONS: dict[NodeState, frozenset[NodeState]] = {
    N.ONLINE: frozenset({N.MAINTENANCE, N.UNKNOWN, N.FENCE}),
    N.MAINTENANCE: frozenset({N.ONLINE, N.UNKNOWN, N.FENCE}),
    N.UNKNOWN: frozenset({N.ONLINE, N.GONE, N.FENCE}),
    N.FENCE: frozenset({N.UNKNOWN}),
    N.GONE: frozenset({N.ONLINE, N.FENCE}),
}


class ShutdownPolicy(StrEnum):
    """datacenter.cfg ``ha: shutdown_policy`` (§3.2.5)."""

    CONDITIONAL = "conditional"
    FREEZE = "freeze"
    FAILOVER = "failover"
    MIGRATE = "migrate"


def check_transition(table: Mapping[Any, frozenset[Any]], old: str, new: str, what: str) -> None:
    """Raise ``ValueError`` when ``old -> new`` is not in ``table``."""
    allowed = table.get(old)
    if allowed is None or new not in allowed:
        raise ValueError(f"invalid {what} transition '{old}' => '{new}'")
