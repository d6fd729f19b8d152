"""Node selection for a service (BEHAVIOUR.md §5.9)."""

from __future__ import annotations

from enum import StrEnum

from ha.config.resources import ResourceConfig
from ha.records import ServiceData
from ha.rules import CompiledRules, get_node_affinity, get_resource_affinity, is_allowed_on_node
from ha.usage import Usage


class Preference(StrEnum):
    NONE = "none"
    BEST_SCORE = "best-score"
    TRY_NEXT = "try-next"


# bound once: reading an Enum member through its class costs about 0.1 µs on Python 3.11
_NONE = Preference.NONE
_TRY_NEXT = Preference.TRY_NEXT


def select_service_node(
    rules: CompiledRules,
    usage: Usage,
    sid: str,
    cd: ResourceConfig,
    sd: ServiceData,
    preference: Preference,
    ss: dict[str, ServiceData],
) -> str | None:
    """Pick the node a service should run on, or ``None`` when no node is possible."""
    current = sd.node
    usage_nodes = usage.nodes  # online node -> its services
    if (
        preference == _NONE
        and current in usage_nodes
        and sid not in rules.node_affinity
        and sid not in rules.positive
        and sid not in rules.negative
    ):
        # fast path, same result as the steps below for a service without rules on an
        # online node (most services, every pass of every round): allowed = preferred =
        # online, nothing together or apart; step 4 keeps the node without failback,
        # else step 7 (a maintenance node) or step 8 (stay)
        fallback = sd.maintenance_node
        if cd.failback and fallback is not None and fallback in usage_nodes:
            return fallback
        return current

    online = usage_nodes.keys()
    allowed, top = get_node_affinity(rules, sid, online)
    if not top:
        return None
    together, separate = get_resource_affinity(rules, sid, ss, online)

    # stay on the current node if failback is off and the node is still allowed
    if (
        preference == _NONE
        and not cd.failback
        and current in allowed
        and is_allowed_on_node(together, separate, current)
    ):
        return current

    # fast path, same result as the steps below when nothing filters the
    # preferred set: stay where we are (avoids copying the node set per service)
    if (
        preference == _NONE
        and not together
        and not separate
        and sd.maintenance_node is None
        and current in top
    ):
        return current

    pri = set(top)
    if preference == _TRY_NEXT:
        pri -= set(sd.failed_nodes or ())

    pri -= separate
    in_pri = {n: c for n, c in together.items() if n in pri}
    if in_pri:
        best = min(in_pri, key=lambda n: (-in_pri[n], n))
        pri = {best}

    if sd.maintenance_node is not None and sd.maintenance_node in pri:
        return sd.maintenance_node
    if preference == _NONE and current in pri:
        return current

    scores = usage.score_nodes_to_start_service(sid)
    nodes = [n for _, n in sorted((scores.get(n, 0.0), n) for n in pri)]  # by (score, name)
    if not nodes:
        return None
    if preference == _TRY_NEXT and current in nodes:
        idx = nodes.index(current)
        if idx < len(nodes) - 1:
            return nodes[idx + 1]
    return nodes[0]
