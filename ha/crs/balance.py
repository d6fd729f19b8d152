"""Candidates of automatic rebalancing: stationary bundles and their targets (BEHAVIOUR.md §5.12 step 2)."""

from __future__ import annotations

from collections.abc import Set as AbstractSet

from ha.crs.usage import BalanceCandidate
from ha.records import ServiceData
from ha.rules import CompiledRules, get_node_affinity, get_resource_affinity
from ha.states import ServiceState

S = ServiceState
_MOVING = (S.MIGRATE, S.RELOCATE)


def stationary_bundles(
    rules: CompiledRules, ss: dict[str, ServiceData], online: AbstractSet[str]
) -> list[BalanceCandidate]:
    """One candidate per bundle of started services that sit together on one node, leaders sorted.

    A bundle is a started service with its existing positive-affinity partners;
    it is skipped while a partner is being moved, partners not ``started`` are
    left out, and it is skipped when its started members are on several nodes.
    Targets: the leader's preferred node-affinity nodes (all online nodes
    without a rule), minus nodes of its negative-affinity partners, minus its
    own node. Positive affinity does not limit the targets (the bundle moves as
    a unit).
    """
    bundles: dict[tuple[str, ...], str] = {}
    for sid in sorted(ss):
        sd = ss[sid]
        if sd.state != S.STARTED:
            continue
        partners = [p for p in sorted(rules.positive.get(sid, ())) if p in ss]
        if any(ss[p].state in _MOVING for p in partners):
            continue
        members = [sid, *(p for p in partners if ss[p].state == S.STARTED)]
        if len({ss[m].node for m in members}) > 1:
            continue
        bundles.setdefault(tuple(sorted(members)), sd.node)
    out = []
    for bundle, source in sorted(bundles.items(), key=lambda kv: kv[0][0]):
        leader = bundle[0]
        if source not in online:
            continue
        _, preferred = get_node_affinity(rules, leader, online)
        _, separate = get_resource_affinity(rules, leader, ss, online)
        targets = tuple(sorted(n for n in preferred if n not in separate and n != source))
        if targets:
            out.append(BalanceCandidate(leader, source, bundle, targets))
    return out
