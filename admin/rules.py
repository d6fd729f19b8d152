"""``ha-manager rules add/set/remove``: node- and resource-affinity rules (§5.13)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from admin.configfiles import (
    check_delete,
    check_node,
    check_options,
    edit_file,
    read_config,
    read_groups,
)
from admin.errors import AdminError, ExitCode
from ha.config import schema
from ha.config.resources import ServiceConfig
from ha.config.rules import NODE_AFFINITY, RULE_TYPES, Rule, RulesConfig, format_rules_cfg, parse_rules_cfg
from ha.config.schema import CONFIG_ID, Kind, Prop
from ha.rules import check_feasibility
from store import records as rec
from store.base import Store

GROUP_RULE_PREFIX = "ha-group-"  # the rules the master makes of groups (ha/groups.py)


def _check_no_group(services: ServiceConfig, rule: Rule) -> None:
    """A resource with a group follows its group's node affinity (a rule ``ha-group-<group>``
    the master makes, ha/groups.py): it cannot be in a node-affinity rule too (issue #13)."""
    if rule.type != NODE_AFFINITY or rule.disable:
        return
    for sid in sorted(rule.resources):
        cd = services.services.get(sid)
        if cd is not None and cd.group is not None:
            raise AdminError(
                f"resource '{sid}' is in group '{cd.group}': a resource has a group or a node-affinity"
                f" rule, not both (ha-manager set {sid} --delete group)",
                ExitCode.REFUSED,
            )


def _check_rule_options(
    rtype: str, options: Mapping[str, str], nodes: list[str], managed: set[str]
) -> list[tuple[Prop, Any]]:
    """``schema.RULES`` checks every value; resources must be HA managed, nodes cluster members."""
    unknown = "option '{key}' does not apply to {type} rules"
    changes = check_options(schema.RULES, rtype, options, unknown, adding=True)
    for prop, value in changes:
        if prop.kind == Kind.SID_LIST:
            for sid in sorted(value):
                if sid not in managed:
                    raise AdminError(f"resource '{sid}' is not HA managed", ExitCode.NOT_FOUND)
        elif prop.kind == Kind.NODE_LIST:
            for n in value:
                check_node(n, nodes)
    return changes


def _check_rule_feasible(conf: RulesConfig, rid: str, nodes: list[str]) -> None:
    rule = conf.rules[rid]
    if rule.disable:
        return
    errors = check_feasibility(conf, len(nodes)).get(rid)
    if errors:
        details = [f"{prop}: {msg}" for prop in sorted(errors) for msg in errors[prop]]
        raise AdminError(f"Rule '{rid}' is invalid.", ExitCode.REFUSED, details)


def _rules_edit(store: Store, edit: Callable[[RulesConfig], None], digest: str | None = None) -> str:
    return edit_file(store, rec.RULES_CFG, parse_rules_cfg, format_rules_cfg, edit, digest)


def rule_add(store: Store, rtype: str, rid: str, options: Mapping[str, str], nodes: list[str]) -> Rule:
    if rtype not in RULE_TYPES:
        raise AdminError(f"unknown rule type '{rtype}' (one of {', '.join(RULE_TYPES)})", ExitCode.USAGE)
    if not CONFIG_ID.match(rid):
        raise AdminError(f"invalid rule id '{rid}'", ExitCode.USAGE)
    if rid.startswith(GROUP_RULE_PREFIX):
        raise AdminError(f"rule ids '{GROUP_RULE_PREFIX}*' are the groups' (groupadd)", ExitCode.USAGE)
    for prop in schema.RULES.props_for(rtype):
        if prop.required and not options.get(prop.name):
            raise AdminError(f"{rtype} rule: --{prop.name} is required", ExitCode.USAGE)
    conf_r, _ = read_config(store)
    changes = _check_rule_options(rtype, options, nodes, set(conf_r.services))
    result: list[Rule] = []

    def edit(conf: RulesConfig) -> None:
        if rid in conf.rules:
            raise AdminError(f"rule '{rid}' already defined", ExitCode.REFUSED)
        order = max((r.order for r in conf.rules.values()), default=0) + 1
        rule = Rule(rid, rtype, set(), order)
        for prop, value in changes:
            schema.RULES.assign(rule, prop, value)
        conf.rules[rid] = rule
        _check_no_group(conf_r, rule)
        _check_rule_feasible(conf, rid, nodes)
        result[:] = [rule]

    _rules_edit(store, edit)
    return result[0]


def rule_set(
    store: Store,
    rtype: str,
    rid: str,
    options: Mapping[str, str],
    delete: list[str],
    nodes: list[str],
    digest: str | None = None,
) -> str:
    if rtype not in RULE_TYPES:
        raise AdminError(f"unknown rule type '{rtype}' (one of {', '.join(RULE_TYPES)})", ExitCode.USAGE)
    if not options and not delete:
        raise AdminError("nothing to change (give an option or --delete)", ExitCode.USAGE)
    conf_r, _ = read_config(store)
    changes = _check_rule_options(rtype, options, nodes, set(conf_r.services))
    resets = check_delete(schema.RULES, rtype, delete, "rule ")
    missing = _no_such_rule(store, rid)

    def edit(conf: RulesConfig) -> None:
        rule = conf.rules.get(rid)
        if rule is None:
            raise missing
        if rule.type != rtype:
            raise AdminError(f"rule '{rid}' is a {rule.type} rule, not {rtype}", ExitCode.USAGE)
        for prop, value in changes:
            schema.RULES.assign(rule, prop, value)
        for prop in resets:
            schema.RULES.reset(rule, prop)
        _check_no_group(conf_r, rule)
        _check_rule_feasible(conf, rid, nodes)

    return _rules_edit(store, edit, digest)


def _no_such_rule(store: Store, rid: str) -> AdminError:
    """Not in rules.cfg: maybe a rule the master makes of a group (rules list shows those)."""
    gid = rid.removeprefix(GROUP_RULE_PREFIX)
    used = {cd.group for cd in read_config(store)[0].services.values()}
    if rid.startswith(GROUP_RULE_PREFIX) and gid in used and gid in read_groups(store)[0].groups:
        return AdminError(
            f"rule '{rid}' is made from group '{gid}': change the group (ha-manager groupset {gid}),"
            f" or take its resources out of it (ha-manager set SID --delete group)",
            ExitCode.REFUSED,
        )
    return AdminError(f"no such rule '{rid}'", ExitCode.NOT_FOUND)


def rule_remove(store: Store, rid: str) -> None:
    missing = _no_such_rule(store, rid)

    def edit(conf: RulesConfig) -> None:
        if rid not in conf.rules:
            raise missing
        del conf.rules[rid]

    _rules_edit(store, edit)
