"""The affinity checks of a move (``migrate``/``relocate``): BEHAVIOUR.md §5.6 *queue motion*.

One rule for the master (ha/manager.py, which refuses or queues the move) and for
the admin tools (admin/commands.py ``motion_info``, which tell the user before
queueing it): the manager's behaviour is the reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ha.config.resources import ServiceConfig
from ha.records import ServiceData
from ha.rules import CompiledRules
from ha.states import RequestedState


def blocking_partners(
    rules: CompiledRules, ss: Mapping[str, ServiceData], sid: str, target: str
) -> list[str]:
    """Negatively affine services (sorted) that keep ``sid`` off ``target``.

    A partner known to the master blocks unless its node is set and is not
    ``target``, or its target is set and is not ``target`` (so a partner still
    migrating *to* ``target`` from elsewhere does not block, as in the original).
    """
    out = []
    for csid in sorted(rules.negative.get(sid, ())):
        csd = ss.get(csid)
        if csd is None:
            continue
        node_ok = bool(csd.node) and csd.node != target
        target_ok = csd.target is not None and csd.target != target
        if not (node_ok or target_ok):
            out.append(csid)
    return out


def comigrated_partners(
    rules: CompiledRules, ss: Mapping[str, ServiceData], sc: ServiceConfig, sid: str, target: str
) -> list[str]:
    """Positively affine services (sorted) that move along with ``sid`` to ``target``.

    Those the master knows, whose configuration exists and is not ``ignored``,
    and that are not already on or going to ``target``.
    """
    out = []
    for csid in sorted(rules.positive.get(sid, ())):
        csd = ss.get(csid)
        cd = sc.get(csid)
        if csd is None or cd is None or cd.state == RequestedState.IGNORED:
            continue
        if target in (csd.node, csd.target):
            continue
        out.append(csid)
    return out


@dataclass
class MotionCheck:
    """Both checks of one move: it is refused when anything blocks (the first blocker is logged)."""

    blocking: list[str] = field(default_factory=list)
    comigrated: list[str] = field(default_factory=list)


def check_motion(
    rules: CompiledRules, ss: Mapping[str, ServiceData], sc: ServiceConfig, sid: str, target: str
) -> MotionCheck:
    return MotionCheck(
        blocking_partners(rules, ss, sid, target), comigrated_partners(rules, ss, sc, sid, target)
    )
