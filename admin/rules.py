"""``ha-manager rules add/set/remove``: node- and resource-affinity rules (§5.13)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from admin.configfiles import check_node, edit_file, groups_migrated, normalize_sid, read_config
from admin.errors import AdminError, ExitCode
from ha.config.rules import (
    NODE_AFFINITY,
    RESOURCE_AFFINITY,
    RULE_TYPES,
    Rule,
    RulesConfig,
    format_rules_cfg,
    parse_rules_cfg,
)
from ha.config.sectionconfig import CONFIG_ID, parse_bool, parse_node_list
from ha.errors import ConfigError
from ha.rules import check_feasibility
from store import records as rec
from store.base import Store

_RULE_OPTIONS = {
    NODE_AFFINITY: ("resources", "nodes", "strict", "comment", "disable"),
    RESOURCE_AFFINITY: ("resources", "affinity", "comment", "disable"),
}


def _check_rules_allowed(store: Store, what: str) -> None:
    if not groups_migrated(store):
        raise AdminError(
            f"cannot {what} rule: ha groups have not been migrated to rules yet", ExitCode.REFUSED
        )


def _apply_rule_options(
    store: Store, rule: Rule, options: Mapping[str, str], nodes: list[str], managed: set[str]
) -> None:
    allowed = _RULE_OPTIONS[rule.type]
    for key, value in options.items():
        if key not in allowed:
            raise AdminError(f"option '{key}' does not apply to {rule.type} rules", ExitCode.USAGE)
        try:
            if key == "resources":
                sids = {normalize_sid(s.strip()) for s in value.split(",") if s.strip()}
                if not sids:
                    raise AdminError("property 'resources': empty resource list", ExitCode.USAGE)
                for sid in sorted(sids):
                    if sid not in managed:
                        raise AdminError(f"resource '{sid}' is not HA managed", ExitCode.NOT_FOUND)
                rule.resources = sids
            elif key == "nodes":
                parsed = parse_node_list(value, key, "command line", None)
                for n in parsed:
                    check_node(n, nodes)
                rule.nodes = parsed
            elif key == "strict":
                rule.strict = parse_bool(value, key, "command line", None)
            elif key == "affinity":
                if value not in ("positive", "negative"):
                    raise AdminError("property 'affinity' must be positive or negative", ExitCode.USAGE)
                rule.affinity = value
            elif key == "comment":
                rule.comment = value
            elif key == "disable":
                rule.disable = parse_bool(value, key, "command line", None)
        except ConfigError as e:
            raise AdminError(e.message, ExitCode.USAGE) from None


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
    _check_rules_allowed(store, "create")
    if rtype not in RULE_TYPES:
        raise AdminError(f"unknown rule type '{rtype}' (one of {', '.join(RULE_TYPES)})", ExitCode.USAGE)
    if not CONFIG_ID.match(rid):
        raise AdminError(f"invalid rule id '{rid}'", ExitCode.USAGE)
    for req in ("resources", "nodes") if rtype == NODE_AFFINITY else ("resources", "affinity"):
        if not options.get(req):
            raise AdminError(f"{rtype} rule: --{req} is required", ExitCode.USAGE)
    conf_r, _ = read_config(store)
    managed = set(conf_r.services)
    result: list[Rule] = []

    def edit(conf: RulesConfig) -> None:
        if rid in conf.rules:
            raise AdminError(f"rule '{rid}' already defined", ExitCode.REFUSED)
        order = max((r.order for r in conf.rules.values()), default=0) + 1
        rule = Rule(rid, rtype, set(), order)
        _apply_rule_options(store, rule, options, nodes, managed)
        conf.rules[rid] = rule
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
    _check_rules_allowed(store, "update")
    if rtype not in RULE_TYPES:
        raise AdminError(f"unknown rule type '{rtype}' (one of {', '.join(RULE_TYPES)})", ExitCode.USAGE)
    if not options and not delete:
        raise AdminError("nothing to change (give an option or --delete)", ExitCode.USAGE)
    conf_r, _ = read_config(store)
    managed = set(conf_r.services)

    def edit(conf: RulesConfig) -> None:
        rule = conf.rules.get(rid)
        if rule is None:
            raise AdminError(f"no such rule '{rid}'", ExitCode.NOT_FOUND)
        if rule.type != rtype:
            raise AdminError(f"rule '{rid}' is a {rule.type} rule, not {rtype}", ExitCode.USAGE)
        _apply_rule_options(store, rule, options, nodes, managed)
        for key in delete:
            if key == "comment":
                rule.comment = None
            elif key == "disable":
                rule.disable = False
            elif key == "strict" and rule.type == NODE_AFFINITY:
                rule.strict = False
            else:
                raise AdminError(f"cannot delete rule option '{key}'", ExitCode.USAGE)
        _check_rule_feasible(conf, rid, nodes)

    return _rules_edit(store, edit, digest)


def rule_remove(store: Store, rid: str) -> None:
    _check_rules_allowed(store, "delete")

    def edit(conf: RulesConfig) -> None:
        if rid not in conf.rules:
            raise AdminError(f"no such rule '{rid}'", ExitCode.NOT_FOUND)
        del conf.rules[rid]

    _rules_edit(store, edit)
