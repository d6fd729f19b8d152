"""Rule checks, transforms and compiled affinity lookups (BEHAVIOUR.md §5.13)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from ha.config.rules import NODE_AFFINITY, RESOURCE_AFFINITY, Rule, RulesConfig
from ha.records import ServiceData
from ha.usage import used_nodes

Errors = dict[str, dict[str, list[str]]]  # rule id -> property -> messages

# §5.13.2 messages, verbatim
MSG_NA_MULTI_PRIO = (
    "resources are in a resource affinity rule and cannot be in a node affinity rule with multiple priorities"
)
MSG_RA_MULTI_PRIO = "resources are in node affinity rules with multiple priorities"
MSG_POS_MULTI_NA = "resources are in multiple node affinity rules"
MSG_NA_POS_OTHER = (
    "at least one resource is in a positive resource affinity rule and there are other resources "
    "in at least one other node affinity rule already"
)
MSG_NEG_TOO_FEW = "two or more resources are restricted to less nodes than available to the resources"
MSG_NA_NEG_TOO_FEW = (
    "at least one resource is in a negative resource affinity rule and this rule would restrict "
    "these to less nodes than available to the resources"
)


def _add(errors: Errors, rule_id: str, prop: str, msg: str) -> None:
    msgs = errors.setdefault(rule_id, {}).setdefault(prop, [])
    if msg not in msgs:
        msgs.append(msg)


def _enabled(rules: RulesConfig, rtype: str) -> list[Rule]:
    return sorted(
        (r for r in rules.rules.values() if r.type == rtype and not r.disable), key=lambda r: (r.order, r.id)
    )


def _connected_sets(rules: list[Rule]) -> list[tuple[list[Rule], set[str]]]:
    """Merge rules sharing a resource; rules ordered by their lowest sid (§5.13.2)."""
    sets: list[tuple[list[Rule], set[str]]] = []
    for rule in sorted(rules, key=lambda r: (min(r.resources), r.id)):
        for members, resources in sets:
            if resources & rule.resources:
                members.append(rule)
                resources.update(rule.resources)
                break
        else:
            sets.append(([rule], set(rule.resources)))
    return sets


def check_feasibility(rules: RulesConfig, node_count: int) -> Errors:
    """§5.13.2: collect every infeasibility, per rule and property."""
    errors: Errors = {}
    node_rules = _enabled(rules, NODE_AFFINITY)
    res_rules = _enabled(rules, RESOURCE_AFFINITY)
    positive = [r for r in res_rules if r.affinity == "positive"]
    negative = [r for r in res_rules if r.affinity == "negative"]

    # 1. a resource in several node-affinity rules
    by_sid: dict[str, list[Rule]] = defaultdict(list)
    for r in node_rules:
        for sid in r.resources:
            by_sid[sid].append(r)
    for sid in sorted(by_sid):
        if len(by_sid[sid]) > 1:
            for r in by_sid[sid]:
                _add(
                    errors,
                    r.id,
                    "resources",
                    f"resource '{sid}' is already used in another node affinity rule",
                )
    # 2. ineffective resource-affinity rules
    for r in res_rules:
        if len(r.resources) < 2:
            _add(errors, r.id, "resources", "rule is ineffective as there are less than two resources")
    # 3. negative rule with more resources than nodes
    for r in negative:
        if len(r.resources) > node_count:
            _add(errors, r.id, "resources", "rule defines more resources than available nodes")
    # 4. positive set sharing two or more resources with a negative rule
    pos_sets = _connected_sets(positive)
    for members, resources in pos_sets:
        for neg in negative:
            if len(resources & neg.resources) >= 2:
                for p in members:
                    _add(
                        errors,
                        p.id,
                        "affinity",
                        "rule shares two or more resources with a negative resource affinity rule",
                    )
                _add(
                    errors,
                    neg.id,
                    "affinity",
                    "rule shares two or more resources with a positive resource affinity rule",
                )
    # 5. resource-affinity resources in a node-affinity rule with several priorities
    for r in res_rules:
        for na in node_rules:
            if r.resources & na.resources and len(set(na.nodes.values())) > 1:
                _add(errors, na.id, "nodes", MSG_NA_MULTI_PRIO)
                _add(errors, r.id, "resources", MSG_RA_MULTI_PRIO)
    # 6. connected positive set overlapping more than one node-affinity rule
    for members, resources in pos_sets:
        overlapping = [na for na in node_rules if na.resources & resources]
        if len(overlapping) > 1:
            for p in members:
                _add(errors, p.id, "resources", MSG_POS_MULTI_NA)
            for na in overlapping:
                _add(errors, na.id, "resources", MSG_NA_POS_OTHER)
    # 7. negative rule restricted to fewer nodes than its resources
    for neg in negative:
        restricted = [(na, neg.resources & na.resources) for na in node_rules if neg.resources & na.resources]
        sids = set().union(*(s for _, s in restricted)) if restricted else set()
        nodes = set().union(*(set(na.nodes) for na, _ in restricted)) if restricted else set()
        if sids and len(nodes) < len(sids):
            _add(errors, neg.id, "resources", MSG_NEG_TOO_FEW)
            for na, _ in restricted:
                _add(errors, na.id, "resources", MSG_NA_NEG_TOO_FEW)
    return errors


def transform(rules: RulesConfig, nodes: list[str]) -> list[str]:
    """Drop infeasible rules and apply the transforms of §5.13.3; return the log messages."""
    errors = check_feasibility(rules, len(nodes))
    messages: list[str] = []
    for rule_id in sorted(errors):
        rules.rules.pop(rule_id, None)
        for prop in sorted(errors[rule_id]):
            messages.extend(f"Drop rule '{rule_id}', because {msg}." for msg in errors[rule_id][prop])
    res_rules = _enabled(rules, RESOURCE_AFFINITY)
    positive = [r for r in res_rules if r.affinity == "positive"]
    # 1. merge connected positive rules
    for members, resources in _connected_sets(positive):
        if len(members) < 2:
            continue
        merged = Rule(
            "_merged-" + "-".join(r.id for r in members),
            RESOURCE_AFFINITY,
            set(resources),
            members[0].order,
            affinity="positive",
        )
        for r in members:
            rules.rules.pop(r.id, None)
        rules.rules[merged.id] = merged
    res_rules = _enabled(rules, RESOURCE_AFFINITY)
    positive = [r for r in res_rules if r.affinity == "positive"]
    negative = [r for r in res_rules if r.affinity == "negative"]
    # 2. implicit negatives
    neg_of: dict[str, set[str]] = defaultdict(set)
    for n in negative:
        for a in n.resources:
            neg_of[a] |= n.resources - {a}
    for p in positive:
        for member in sorted(p.resources):
            for x in sorted(neg_of.get(member, ())):
                for other in sorted(p.resources - {member}):
                    if x in neg_of.get(other, ()) or x == other:
                        continue
                    rid = f"_implicit-negative-{p.id}-{other}-{x}"
                    if rid not in rules.rules:
                        rules.rules[rid] = Rule(
                            rid, RESOURCE_AFFINITY, {other, x}, rules.next_order(), affinity="negative"
                        )
    # 3. positive rules pull their resources into an overlapping node-affinity rule
    for p in positive:
        for na in _enabled(rules, NODE_AFFINITY):
            if na.resources & p.resources:
                na.resources |= p.resources
    return messages


@dataclass(slots=True)
class CompiledRules:
    """Lookup tables built from the enabled rules (§5.13.4, §5.13.5)."""

    node_affinity: dict[str, dict[str, int]] = field(default_factory=dict)
    positive: dict[str, set[str]] = field(default_factory=dict)
    negative: dict[str, set[str]] = field(default_factory=dict)


def compile_rules(rules: RulesConfig, nodes: list[str]) -> CompiledRules:
    compiled = CompiledRules()
    for r in _enabled(rules, NODE_AFFINITY):
        for sid in r.resources:
            eff = dict(r.nodes)
            if not r.strict:
                for n in nodes:
                    eff.setdefault(n, -1)
            compiled.node_affinity[sid] = eff
    for r in _enabled(rules, RESOURCE_AFFINITY):
        table = compiled.positive if r.affinity == "positive" else compiled.negative
        for sid in r.resources:
            table.setdefault(sid, set()).update(r.resources - {sid})
    return compiled


def get_node_affinity(
    rules: CompiledRules, sid: str, online: AbstractSet[str]
) -> tuple[AbstractSet[str], AbstractSet[str]]:
    """(allowed, preferred) nodes: without a rule both are all online nodes.

    The result may be ``online`` itself: callers must not modify it.
    """
    eff = rules.node_affinity.get(sid)
    if eff is None:
        return online, online
    allowed = {n: p for n, p in eff.items() if n in online}
    if not allowed:
        return set(), set()
    top = max(allowed.values())
    return set(allowed), {n for n, p in allowed.items() if p == top}


def get_resource_affinity(
    rules: CompiledRules, sid: str, ss: dict[str, ServiceData], online: AbstractSet[str]
) -> tuple[dict[str, int], set[str]]:
    """(together, separate): where positive partners are, where negative partners are."""
    together: dict[str, int] = {}
    separate: set[str] = set()
    for csid in rules.positive.get(sid, ()):
        sd = ss.get(csid)
        if sd is None:
            continue
        current, target = used_nodes(sd.state, sd.node, sd.target, online)
        node = target if target is not None else current
        if node is not None:
            together[node] = together.get(node, 0) + 1
    for csid in rules.negative.get(sid, ()):
        sd = ss.get(csid)
        if sd is None:
            continue
        current, target = used_nodes(sd.state, sd.node, sd.target, online)
        separate.update(n for n in (current, target) if n is not None)
    return together, separate


def is_allowed_on_node(together: dict[str, int], separate: set[str], node: str) -> bool:
    return bool(together.get(node)) or node not in separate
