"""Administrative operations on a cluster's records: what ``ha-manager`` does.

Every edit is validated before it is written, written atomically with a
compare-and-swap on the version that was read (so two concurrent edits
cannot silently overwrite each other), and refused with an
:class:`AdminError` carrying a one-line message and an exit code otherwise.
Nothing is written when an edit is refused. The node's API
(``actors/api.py``) calls these functions; ``ha-manager`` reaches them
through the API (or, for a stopped cluster, directly).

Digests: the ``digest`` of a config file is its store version, which
changes whenever its bytes change. ``set``-style edits accept the digest a
caller read and refuse (exit 5) when the file changed since.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ha.config.crm_commands import parse_crm_command
from ha.config.groups import Group, GroupConfig, format_groups_cfg, parse_groups_cfg
from ha.config.resources import (
    MAX_COMMENT,
    RESOURCE_TYPES,
    ResourceConfig,
    ServiceConfig,
    format_resources_cfg,
    normalize_state,
    parse_resources_cfg,
    parse_sid,
    resource_from_dict,
)
from ha.config.rules import (
    NODE_AFFINITY,
    RESOURCE_AFFINITY,
    RULE_TYPES,
    Rule,
    RulesConfig,
    format_rules_cfg,
    parse_rules_cfg,
)
from ha.config.sectionconfig import CONFIG_ID, parse_bool, parse_node_list, parse_uint
from ha.constants import DEFAULT_MAX_RELOCATE, DEFAULT_MAX_RESTART
from ha.errors import ConfigError, HaError
from ha.records import LrmStatus, ManagerStatus
from ha.rules import check_feasibility, compile_rules, transform
from ha.states import NodeState, RequestedState, ServiceState
from store import records as rec
from store.base import Store, VersionConflict

# exit codes of ha-manager (docs/CLI.md); the API reports them as error codes too
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_REFUSED = 4
EXIT_CONFLICT = 5
EXIT_UNREACHABLE = 6
EXIT_FORBIDDEN = 7

# the API's error ``reason`` for each code (docs/API.md)
REASONS: dict[int, str] = {
    EXIT_FAILED: "internal",
    EXIT_USAGE: "usage",
    EXIT_NOT_FOUND: "not_found",
    EXIT_REFUSED: "refused",
    EXIT_CONFLICT: "conflict",
    EXIT_UNREACHABLE: "unreachable",
    EXIT_FORBIDDEN: "forbidden",
}


class AdminError(HaError):
    """A refused operation: one-line ``message``, exit ``code``, optional detail lines."""

    def __init__(
        self, message: str, code: int = EXIT_REFUSED, details: Sequence[str] = (), reason: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.details = list(details)
        self.reason = reason or REASONS.get(code, "failed")


@dataclass
class Snapshot:
    """Everything ``status`` needs, read in one go."""

    ms: ManagerStatus
    lrm: dict[str, LrmStatus | None]
    conf: ServiceConfig
    digest: str | None


# -- reading --------------------------------------------------------------------------


def read_config(store: Store) -> tuple[ServiceConfig, str | None]:
    text, version = rec.read_text(store, rec.RESOURCES_CFG)
    conf, errors = parse_resources_cfg(text, rec.RESOURCES_CFG, nodes=rec.read_locations(store))
    if errors:
        # a broken section is reported, never silently dropped by an admin tool
        raise AdminError(f"resources.cfg is invalid: {errors[0]}", EXIT_CONFLICT)
    return conf, version


def read_groups(store: Store) -> tuple[GroupConfig, str | None]:
    text, version = rec.read_text(store, rec.GROUPS_CFG)
    conf, errors = parse_groups_cfg(text, rec.GROUPS_CFG)
    if errors:
        raise AdminError(f"groups.cfg is invalid: {errors[0]}", EXIT_CONFLICT)
    return conf, version


def read_rules(store: Store) -> tuple[RulesConfig, str | None]:
    text, version = rec.read_text(store, rec.RULES_CFG)
    conf, errors = parse_rules_cfg(text, rec.RULES_CFG)
    if errors:
        raise AdminError(f"rules.cfg is invalid: {errors[0]}", EXIT_CONFLICT)
    return conf, version


def groups_migrated(store: Store) -> bool:
    """The reference's test: groups count as migrated to rules once groups.cfg holds none (§5.14)."""
    return not read_groups(store)[0].groups


def snapshot(store: Store, nodes: list[str]) -> Snapshot:
    ms, _ = rec.read_manager_status(store)
    conf, digest = read_config(store)
    lrm: dict[str, LrmStatus | None] = {}
    for n in sorted(set(nodes) | set(ms.node_status)):
        st = rec.read_lrm_status(store, n)
        lrm[n] = None if st.state is None else st
    return Snapshot(ms, lrm, conf, digest)


def resource_to_dict(cd: ResourceConfig) -> dict[str, Any]:
    """One resource as the API and ``config --output-format json`` show it."""
    d: dict[str, Any] = {
        "sid": cd.sid, "type": cd.type, "name": cd.name, "node": cd.node, "state": cd.state,
        "max_restart": cd.max_restart, "max_relocate": cd.max_relocate, "failback": int(cd.failback),
    }  # fmt: skip
    if cd.group is not None:
        d["group"] = cd.group
    if cd.comment is not None:
        d["comment"] = cd.comment
    d.update(cd.extra)
    return d


def group_to_dict(g: Group) -> dict[str, Any]:
    d: dict[str, Any] = {
        "group": g.id,
        "type": "group",
        "nodes": ",".join(f"{n}:{p}" if p else n for n, p in sorted(g.nodes.items())),
        "restricted": int(g.restricted),
        "nofailback": int(g.nofailback),
    }
    if g.comment is not None:
        d["comment"] = g.comment
    return d


def rule_to_dict(r: Rule) -> dict[str, Any]:
    d: dict[str, Any] = {
        "rule": r.id,
        "type": r.type,
        "resources": ",".join(sorted(r.resources)),
        "disable": int(r.disable),
    }
    if r.type == NODE_AFFINITY:
        d["nodes"] = ",".join(f"{n}:{p}" if p else n for n, p in sorted(r.nodes.items()))
        d["strict"] = int(r.strict)
    if r.affinity is not None:
        d["affinity"] = r.affinity
    if r.comment is not None:
        d["comment"] = r.comment
    return d


def rules_view(
    store: Store, nodes: list[str], rtype: str | None = None, resource: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """The rules with their effective state: ``in use`` or ``ignored (conflicts)`` (§5.13.2)."""
    conf, version = read_rules(store)
    errors = check_feasibility(conf, len(nodes))
    out: list[dict[str, Any]] = []
    for r in sorted(conf.rules.values(), key=lambda r: (r.order, r.id)):
        if rtype is not None and r.type != rtype:
            continue
        if resource is not None and normalize_sid(resource) not in r.resources:
            continue
        d = rule_to_dict(r)
        d["enabled"] = int(not r.disable)
        if r.disable:
            d["state"] = "disabled"
        elif r.id in errors:
            d["state"] = "ignored (conflicts)"
            d["errors"] = {p: list(m) for p, m in sorted(errors[r.id].items())}
        else:
            d["state"] = "in use"
        out.append(d)
    return out, version


# -- writing --------------------------------------------------------------------------

C = TypeVar("C")


def _edit_file(
    store: Store,
    name: str,
    parse: Callable[[str, str], tuple[C, list[ConfigError]]],
    fmt: Callable[[C], str],
    edit: Callable[[C], None],
    digest: str | None = None,
    retries: int = 5,
) -> str:
    """Read, edit, validate and CAS-write one config file; return its new version (digest)."""
    for _ in range(retries):
        text, version = rec.read_text(store, name)
        if digest is not None and digest != (version or ""):
            raise AdminError(
                f"{name} was changed by someone else (digest mismatch), re-read it", EXIT_CONFLICT
            )
        conf, errors = parse(text, name)
        if errors:
            raise AdminError(f"{name} is invalid: {errors[0]}", EXIT_CONFLICT)
        edit(conf)
        try:
            return store.write(name, fmt(conf).encode(), version or "")
        except VersionConflict:
            if digest is not None:
                raise AdminError(f"{name} was changed concurrently, re-read it", EXIT_CONFLICT) from None
    raise AdminError(f"{name} keeps changing, try again", EXIT_CONFLICT)


def _edit(
    store: Store, edit: Callable[[ServiceConfig], None], digest: str | None = None, retries: int = 5
) -> str:
    def parse(text: str, path: str) -> tuple[ServiceConfig, list[ConfigError]]:
        return parse_resources_cfg(text, path)

    return _edit_file(store, rec.RESOURCES_CFG, parse, format_resources_cfg, edit, digest, retries)


def normalize_sid(sid: str) -> str:
    if sid.isdigit():
        sid = f"vm:{sid}"
    try:
        parse_sid(sid)
    except ConfigError as e:
        raise AdminError(e.message, EXIT_USAGE) from None
    return sid


def _check_node(node: str, nodes: list[str]) -> None:
    if node not in nodes:
        raise AdminError(f"unknown node '{node}' (nodes: {', '.join(nodes)})", EXIT_NOT_FOUND)


def _check_group_use(store: Store, group: str) -> None:
    """``--group`` is legacy: only while groups exist, and only an existing group (§8)."""
    groups, _ = read_groups(store)
    if not groups.groups:
        raise AdminError("cannot use group: ha groups have been migrated to rules", EXIT_REFUSED)
    if group not in groups.groups:
        raise AdminError(f"group '{group}' does not exist", EXIT_NOT_FOUND)


def add(store: Store, sid: str, options: Mapping[str, str], nodes: list[str]) -> ResourceConfig:
    """``ha-manager add SID [--state ...]``: the resource must not exist; its node must."""
    sid = normalize_sid(sid)
    node = options.get("node")
    if not node:
        raise AdminError(f"resource '{sid}': --node is required", EXIT_USAGE)
    _check_node(node, nodes)
    if "comment" in options and len(options["comment"]) > MAX_COMMENT:
        raise AdminError(f"property 'comment': longer than {MAX_COMMENT} characters", EXIT_USAGE)
    try:
        cd = resource_from_dict(sid, dict(options), "command line")
    except ConfigError as e:
        raise AdminError(e.message, EXIT_USAGE) from None
    if cd.group is not None:
        _check_group_use(store, cd.group)

    def edit(conf: ServiceConfig) -> None:
        if sid in conf.services:
            raise AdminError(f"resource '{sid}' already defined", EXIT_REFUSED)
        conf.services[sid] = cd

    _edit(store, edit)
    return cd


def set_options(
    store: Store,
    sid: str,
    options: Mapping[str, str],
    delete: list[str],
    digest: str | None = None,
    nodes: list[str] | None = None,
) -> str:
    """``ha-manager set SID ...``: refused in error state unless it sets state disabled (§8)."""
    sid = normalize_sid(sid)
    if not options and not delete:
        raise AdminError("nothing to change (give an option or --delete)", EXIT_USAGE)
    ms, _ = rec.read_manager_status(store)
    sd = ms.service_status.get(sid)
    if sd is not None and sd.state == ServiceState.ERROR and options.get("state") != "disabled":
        raise AdminError(f"service '{sid}' in error state, must be disabled and fixed first", EXIT_REFUSED)
    if options.get("group"):
        _check_group_use(store, options["group"])
    if "node" in options:
        # the node of a managed service is the CRM's business: move it with migrate/relocate
        raise AdminError("cannot set 'node': use 'ha-manager migrate' or 'relocate'", EXIT_USAGE)
    bad_delete = set(delete) & set(options)
    if bad_delete:
        raise AdminError(f"cannot set and delete '{sorted(bad_delete)[0]}' at once", EXIT_USAGE)

    def edit(conf: ServiceConfig) -> None:
        cd = conf.services.get(sid)
        if cd is None:
            raise AdminError(f"no such resource '{sid}'", EXIT_NOT_FOUND)
        spec = RESOURCE_TYPES[cd.type]
        for key, value in options.items():
            try:
                if key == "state":
                    cd.state = normalize_state(value, "command line", None)
                elif key == "group":
                    cd.group = value
                elif key == "failback":
                    cd.failback = parse_bool(value, key, "command line", None)
                elif key == "max_restart":
                    cd.max_restart = parse_uint(value, key, "command line", None)
                elif key == "max_relocate":
                    cd.max_relocate = parse_uint(value, key, "command line", None)
                elif key == "comment":
                    if len(value) > MAX_COMMENT:
                        raise AdminError(
                            f"property 'comment': longer than {MAX_COMMENT} characters", EXIT_USAGE
                        )
                    cd.comment = value
                elif key in spec.extra:
                    cd.extra[key] = value
                else:
                    raise AdminError(f"unknown option '{key}' for {cd.type} resources", EXIT_USAGE)
            except ConfigError as e:
                raise AdminError(e.message, EXIT_USAGE) from None
        for key in delete:
            if key == "comment":
                cd.comment = None
            elif key == "group":
                cd.group = None
            elif key == "failback":
                cd.failback = True
            elif key == "max_restart":
                cd.max_restart = DEFAULT_MAX_RESTART
            elif key == "max_relocate":
                cd.max_relocate = DEFAULT_MAX_RELOCATE
            elif key == "state":
                cd.state = RequestedState.STARTED
            elif key in spec.extra and not spec.extra[key]:
                cd.extra.pop(key, None)
            else:
                raise AdminError(f"cannot delete option '{key}'", EXIT_USAGE)

    return _edit(store, edit, digest)


def remove(store: Store, sid: str, purge: bool = True) -> list[str]:
    """Remove a resource; with ``purge`` also from the rules, deleting rules left empty.

    Returns the ids of the rules that were changed or deleted.
    """
    sid = normalize_sid(sid)

    def edit(conf: ServiceConfig) -> None:
        if sid not in conf.services:
            raise AdminError(f"no such resource '{sid}'", EXIT_NOT_FOUND)
        del conf.services[sid]

    touched: list[str] = []

    def purge_rules(conf: RulesConfig) -> None:
        touched.clear()
        for rid, rule in list(conf.rules.items()):
            if sid in rule.resources:
                rule.resources.discard(sid)
                touched.append(rid)
                if not rule.resources:
                    del conf.rules[rid]

    _edit(store, edit)
    store.delete(rec.location_name(sid))
    if purge and sid in _rules_resources(store):
        _edit_file(store, rec.RULES_CFG, parse_rules_cfg, format_rules_cfg, purge_rules)
    return touched


def _rules_resources(store: Store) -> set[str]:
    conf, _ = read_rules(store)
    return {sid for r in conf.rules.values() for sid in r.resources}


# -- groups (legacy, §5.14) -------------------------------------------------------------

_GROUP_KEYS = ("nodes", "restricted", "nofailback", "comment")


def _apply_group_options(g: Group, options: Mapping[str, str], nodes: list[str]) -> None:
    for key, value in options.items():
        try:
            if key == "nodes":
                parsed = parse_node_list(value, key, "command line", None)
                for n in parsed:
                    _check_node(n, nodes)
                g.nodes = parsed
            elif key == "restricted":
                g.restricted = parse_bool(value, key, "command line", None)
            elif key == "nofailback":
                g.nofailback = parse_bool(value, key, "command line", None)
            elif key == "comment":
                g.comment = value
            else:
                raise AdminError(f"unknown group option '{key}'", EXIT_USAGE)
        except ConfigError as e:
            raise AdminError(e.message, EXIT_USAGE) from None


def _groups_edit(store: Store, edit: Callable[[GroupConfig], None], digest: str | None = None) -> str:
    return _edit_file(store, rec.GROUPS_CFG, parse_groups_cfg, format_groups_cfg, edit, digest)


def group_add(store: Store, group: str, options: Mapping[str, str], nodes: list[str]) -> Group:
    if groups_migrated(store):
        raise AdminError("cannot create group: ha groups have been migrated to rules", EXIT_REFUSED)
    if not CONFIG_ID.match(group):
        raise AdminError(f"invalid group id '{group}'", EXIT_USAGE)
    if not options.get("nodes"):
        raise AdminError("group: --nodes is required", EXIT_USAGE)
    g = Group(group, {})
    _apply_group_options(g, options, nodes)

    def edit(conf: GroupConfig) -> None:
        if group in conf.groups:
            raise AdminError(f"group '{group}' already defined", EXIT_REFUSED)
        conf.groups[group] = g

    _groups_edit(store, edit)
    return g


def group_set(
    store: Store,
    group: str,
    options: Mapping[str, str],
    delete: list[str],
    nodes: list[str],
    digest: str | None = None,
) -> str:
    if groups_migrated(store):
        raise AdminError("cannot update group: ha groups have been migrated to rules", EXIT_REFUSED)
    if not options and not delete:
        raise AdminError("nothing to change (give an option or --delete)", EXIT_USAGE)

    def edit(conf: GroupConfig) -> None:
        g = conf.groups.get(group)
        if g is None:
            raise AdminError(f"no such group '{group}'", EXIT_NOT_FOUND)
        _apply_group_options(g, options, nodes)
        for key in delete:
            if key == "comment":
                g.comment = None
            elif key == "restricted":
                g.restricted = False
            elif key == "nofailback":
                g.nofailback = False
            else:
                raise AdminError(f"cannot delete group option '{key}'", EXIT_USAGE)

    return _groups_edit(store, edit, digest)


def group_remove(store: Store, group: str) -> None:
    if groups_migrated(store):
        raise AdminError("cannot delete group: ha groups have been migrated to rules", EXIT_REFUSED)
    conf, _ = read_config(store)
    users = sorted(sid for sid, cd in conf.services.items() if cd.group == group)

    def edit(gc: GroupConfig) -> None:
        if group not in gc.groups:
            raise AdminError(f"no such group '{group}'", EXIT_NOT_FOUND)
        if users:
            raise AdminError(f"group '{group}' is used by resource '{users[0]}'", EXIT_REFUSED)
        del gc.groups[group]

    _groups_edit(store, edit)


# -- rules (§5.13) ------------------------------------------------------------------------

_RULE_OPTIONS = {
    NODE_AFFINITY: ("resources", "nodes", "strict", "comment", "disable"),
    RESOURCE_AFFINITY: ("resources", "affinity", "comment", "disable"),
}


def _check_rules_allowed(store: Store, what: str) -> None:
    if not groups_migrated(store):
        raise AdminError(f"cannot {what} rule: ha groups have not been migrated to rules yet", EXIT_REFUSED)


def _apply_rule_options(
    store: Store, rule: Rule, options: Mapping[str, str], nodes: list[str], managed: set[str]
) -> None:
    allowed = _RULE_OPTIONS[rule.type]
    for key, value in options.items():
        if key not in allowed:
            raise AdminError(f"option '{key}' does not apply to {rule.type} rules", EXIT_USAGE)
        try:
            if key == "resources":
                sids = {normalize_sid(s.strip()) for s in value.split(",") if s.strip()}
                if not sids:
                    raise AdminError("property 'resources': empty resource list", EXIT_USAGE)
                for sid in sorted(sids):
                    if sid not in managed:
                        raise AdminError(f"resource '{sid}' is not HA managed", EXIT_NOT_FOUND)
                rule.resources = sids
            elif key == "nodes":
                parsed = parse_node_list(value, key, "command line", None)
                for n in parsed:
                    _check_node(n, nodes)
                rule.nodes = parsed
            elif key == "strict":
                rule.strict = parse_bool(value, key, "command line", None)
            elif key == "affinity":
                if value not in ("positive", "negative"):
                    raise AdminError("property 'affinity' must be positive or negative", EXIT_USAGE)
                rule.affinity = value
            elif key == "comment":
                rule.comment = value
            elif key == "disable":
                rule.disable = parse_bool(value, key, "command line", None)
        except ConfigError as e:
            raise AdminError(e.message, EXIT_USAGE) from None


def _check_rule_feasible(conf: RulesConfig, rid: str, nodes: list[str]) -> None:
    rule = conf.rules[rid]
    if rule.disable:
        return
    errors = check_feasibility(conf, len(nodes)).get(rid)
    if errors:
        details = [f"{prop}: {msg}" for prop in sorted(errors) for msg in errors[prop]]
        raise AdminError(f"Rule '{rid}' is invalid.", EXIT_REFUSED, details)


def _rules_edit(store: Store, edit: Callable[[RulesConfig], None], digest: str | None = None) -> str:
    return _edit_file(store, rec.RULES_CFG, parse_rules_cfg, format_rules_cfg, edit, digest)


def rule_add(store: Store, rtype: str, rid: str, options: Mapping[str, str], nodes: list[str]) -> Rule:
    _check_rules_allowed(store, "create")
    if rtype not in RULE_TYPES:
        raise AdminError(f"unknown rule type '{rtype}' (one of {', '.join(RULE_TYPES)})", EXIT_USAGE)
    if not CONFIG_ID.match(rid):
        raise AdminError(f"invalid rule id '{rid}'", EXIT_USAGE)
    for req in ("resources", "nodes") if rtype == NODE_AFFINITY else ("resources", "affinity"):
        if not options.get(req):
            raise AdminError(f"{rtype} rule: --{req} is required", EXIT_USAGE)
    conf_r, _ = read_config(store)
    managed = set(conf_r.services)
    result: list[Rule] = []

    def edit(conf: RulesConfig) -> None:
        if rid in conf.rules:
            raise AdminError(f"rule '{rid}' already defined", EXIT_REFUSED)
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
        raise AdminError(f"unknown rule type '{rtype}' (one of {', '.join(RULE_TYPES)})", EXIT_USAGE)
    if not options and not delete:
        raise AdminError("nothing to change (give an option or --delete)", EXIT_USAGE)
    conf_r, _ = read_config(store)
    managed = set(conf_r.services)

    def edit(conf: RulesConfig) -> None:
        rule = conf.rules.get(rid)
        if rule is None:
            raise AdminError(f"no such rule '{rid}'", EXIT_NOT_FOUND)
        if rule.type != rtype:
            raise AdminError(f"rule '{rid}' is a {rule.type} rule, not {rtype}", EXIT_USAGE)
        _apply_rule_options(store, rule, options, nodes, managed)
        for key in delete:
            if key == "comment":
                rule.comment = None
            elif key == "disable":
                rule.disable = False
            elif key == "strict" and rule.type == NODE_AFFINITY:
                rule.strict = False
            else:
                raise AdminError(f"cannot delete rule option '{key}'", EXIT_USAGE)
        _check_rule_feasible(conf, rid, nodes)

    return _rules_edit(store, edit, digest)


def rule_remove(store: Store, rid: str) -> None:
    _check_rules_allowed(store, "delete")

    def edit(conf: RulesConfig) -> None:
        if rid not in conf.rules:
            raise AdminError(f"no such rule '{rid}'", EXIT_NOT_FOUND)
        del conf.rules[rid]

    _rules_edit(store, edit)


# -- crm commands (§5.6) --------------------------------------------------------------------


@dataclass
class Motion:
    """What a migrate/relocate will drag along or run into (the reference's motion info)."""

    line: str
    comigrated: list[str] = field(default_factory=list)
    blocking: list[str] = field(default_factory=list)


def motion_info(store: Store, task: str, sid: str, node: str, nodes: list[str]) -> Motion:
    """Positive partners that move along, negative partners that block ``node`` (§5.6)."""
    ms, _ = rec.read_manager_status(store)
    rules, _ = read_rules(store)
    known = sorted(set(nodes) | set(ms.node_status))
    transform(rules, known)
    compiled = compile_rules(rules, known)
    motion = Motion(f"{task} {sid} {node}")
    for csid in sorted(compiled.positive.get(sid, ())):
        sd = ms.service_status.get(csid)
        if sd is None or sd.state == "ignored":
            continue
        motion.comigrated.append(csid)
    for csid in sorted(compiled.negative.get(sid, ())):
        sd = ms.service_status.get(csid)
        if sd is None or sd.state == "ignored":
            continue
        if sd.node and sd.node != node:
            continue
        if sd.target and sd.target != node:
            continue
        motion.blocking.append(csid)
    return motion


def crm_command(store: Store, line: str, nodes: list[str]) -> None:
    """Validate and queue one crm command line (§5.6 grammar).

    Refused (nothing queued) when the CRM would only log an error or ignore
    it: unknown service or node, a service HA ignores, a target node that is
    not online, a service already on the target, maintenance while disarmed,
    disarm while disarmed, arm while armed.
    """
    cmd = parse_crm_command(line)
    if cmd is None:
        raise AdminError(f"invalid crm command '{line}'", EXIT_USAGE)
    ms, _ = rec.read_manager_status(store)
    if cmd.sid is not None:
        sid = normalize_sid(cmd.sid)
        conf, _ = read_config(store)
        cd = conf.services.get(sid)
        if cd is None:
            raise AdminError(f"no such resource '{cmd.sid}'", EXIT_NOT_FOUND)
        if cd.state == RequestedState.IGNORED:
            raise AdminError(f"resource '{sid}' is ignored by HA (state ignored)", EXIT_REFUSED)
    if cmd.node is not None:
        _check_node(cmd.node, nodes)
    if cmd.kind in ("migrate", "relocate"):
        assert cmd.node is not None and cmd.sid is not None
        state = ms.node_status.get(cmd.node)
        if ms.node_status and state != NodeState.ONLINE:
            raise AdminError(f"node '{cmd.node}' is not online (state {state or 'unknown'})", EXIT_REFUSED)
        sd = ms.service_status.get(normalize_sid(cmd.sid))
        if sd is not None and sd.node == cmd.node and not sd.target:
            raise AdminError(f"resource '{cmd.sid}' is already on node '{cmd.node}'", EXIT_REFUSED)
    elif cmd.kind == "stop":
        assert cmd.arg is not None
        if not cmd.arg.isdigit():
            raise AdminError(f"timeout must be a number of seconds >= 0, got '{cmd.arg}'", EXIT_USAGE)
    elif cmd.kind == "enable-node-maintenance":
        assert cmd.node is not None
        if ms.disarm is not None:
            raise AdminError("cannot enable maintenance: the HA stack is disarmed", EXIT_REFUSED)
        state = ms.node_status.get(cmd.node)
        if ms.node_status and state not in (NodeState.ONLINE, NodeState.MAINTENANCE):
            raise AdminError(f"node '{cmd.node}' is not online (state {state or 'unknown'})", EXIT_REFUSED)
    elif cmd.kind == "disarm-ha":
        if ms.disarm is not None:
            raise AdminError(f"the HA stack is already disarmed ({ms.disarm.get('state')})", EXIT_REFUSED)
    elif cmd.kind == "arm-ha":
        if ms.disarm is None:
            raise AdminError("the HA stack is not disarmed", EXIT_REFUSED)
    rec.queue_crm_command(store, line)


def move(store: Store, task: str, sid: str, node: str, nodes: list[str]) -> Motion:
    """``migrate``/``relocate``: validate, queue, and say what moves along or blocks.

    As in the reference the command is queued even when a negatively affine
    resource blocks the target (the CRM then rejects it); the caller reports
    the blockers and fails.
    """
    sid = normalize_sid(sid)
    if task not in ("migrate", "relocate"):
        raise AdminError(f"unknown motion '{task}'", EXIT_USAGE)
    line = f"{task} {sid} {node}"
    motion = motion_info(store, task, sid, node, nodes)
    crm_command(store, line, nodes)
    return motion
