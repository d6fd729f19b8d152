"""``ha-manager add/set/remove``: the HA resources (``resources.cfg``, BEHAVIOUR.md §8)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from admin.configfiles import (
    check_delete,
    check_node,
    check_options,
    edit_file,
    normalize_sid,
    read_groups,
    read_rules,
)
from admin.errors import AdminError, ExitCode
from admin.placement import choose_node
from agents.validate import check_agent_properties
from ha.config import schema
from ha.config.resources import (
    ResourceConfig,
    ServiceConfig,
    format_resources_cfg,
    parse_resources_cfg,
    resource_from_dict,
)
from ha.config.rules import NODE_AFFINITY, RulesConfig, format_rules_cfg, parse_rules_cfg
from ha.config.schema import parse_sid
from ha.errors import ConfigError
from ha.states import ServiceState
from store import records as rec
from store.base import Store


def _edit(
    store: Store, edit: Callable[[ServiceConfig], None], digest: str | None = None, retries: int = 5
) -> str:
    locations = rec.read_locations(store)  # a section without node is where it was placed

    def parse(text: str, path: str) -> tuple[ServiceConfig, list[ConfigError]]:
        return parse_resources_cfg(text, path, nodes=locations)

    return edit_file(store, rec.RESOURCES_CFG, parse, format_resources_cfg, edit, digest, retries)


def _check_group_use(store: Store, group: str) -> None:
    """``--group`` names an existing group (§8; groups work on any cluster, issue #13)."""
    groups, _ = read_groups(store)
    if group not in groups.groups:
        raise AdminError(f"group '{group}' does not exist", ExitCode.NOT_FOUND)


def _check_group_not_in_rule(store: Store, sid: str) -> None:
    """A resource follows one node affinity: its group's or a rule's, not both (§5.13.2)."""
    conf, _ = read_rules(store)
    for rid in sorted(conf.rules):
        rule = conf.rules[rid]
        if rule.type == NODE_AFFINITY and sid in rule.resources:
            raise AdminError(
                f"resource '{sid}' is in node-affinity rule '{rid}': a resource has a group or"
                " a node-affinity rule, not both",
                ExitCode.REFUSED,
            )


def _check_agent(rtype: str, props: Mapping[str, str]) -> None:
    """The agent's own checks (``agents/validate.py``), before anything is written (issue #10)."""
    try:
        check_agent_properties(rtype, props)
    except ValueError as e:
        raise AdminError(str(e), ExitCode.USAGE) from None


def add_resource(
    store: Store, sid: str, options: Mapping[str, str], nodes: list[str], local: str | None = None
) -> ResourceConfig:
    """``ha-manager add SID [--node N] [--state ...]``: the resource must not exist; its node must.

    Without a node it starts where the manager would place it (admin/placement.py; the
    node the command runs on, ``local``, among equals). Every option is checked against
    ``schema.RESOURCES`` before anything is read or written.
    """
    return add_resources(store, [(sid, options)], nodes, local)[0]


def add_resources(
    store: Store, entries: Sequence[tuple[str, Mapping[str, str]]], nodes: list[str], local: str | None = None
) -> list[ResourceConfig]:
    """Several ``add``s checked one by one as :func:`add_resource` does, then written in one change.

    All or nothing: one refused entry (bad option, already defined, duplicate) writes none.
    (Thousands of services added one write each make every daemon of every node read the
    file again for each: issue #15.)
    """
    made = [_checked_resource(store, sid, options, nodes, local) for sid, options in entries]
    if len({cd.sid for cd in made}) != len(made):
        raise AdminError("a resource is given twice", ExitCode.USAGE)

    def edit(conf: ServiceConfig) -> None:
        for cd in made:
            if cd.sid in conf.services:
                raise AdminError(f"resource '{cd.sid}' already defined", ExitCode.REFUSED)
            conf.services[cd.sid] = cd

    _edit(store, edit)
    return made


def _checked_resource(
    store: Store, sid: str, options: Mapping[str, str], nodes: list[str], local: str | None
) -> ResourceConfig:
    sid = normalize_sid(sid)
    rtype, _ = parse_sid(sid)
    check_options(
        schema.RESOURCES, rtype, options, f"resource '{sid}': unknown property '{{key}}'", adding=True
    )
    node = options.get("node")
    if node:
        check_node(node, nodes)
    _check_agent(rtype, options)
    group = options.get("group")
    if group:
        _check_group_use(store, group)
        _check_group_not_in_rule(store, sid)
    if not node:
        node = choose_node(store, nodes, local, group or None)
    try:
        return resource_from_dict(sid, {**options, "node": node}, "command line")
    except ConfigError as e:
        raise AdminError(e.message, ExitCode.USAGE) from None


def set_resource(
    store: Store,
    sid: str,
    options: Mapping[str, str],
    delete: list[str],
    digest: str | None = None,
    nodes: list[str] | None = None,
) -> str:
    """``ha-manager set SID ...``: refused in error state unless it sets state disabled (§8)."""
    sid = normalize_sid(sid)
    rtype, _ = parse_sid(sid)
    if not options and not delete:
        raise AdminError("nothing to change (give an option or --delete)", ExitCode.USAGE)
    if "node" in options:
        # the node of a managed service is the CRM's business: move it with migrate/relocate
        raise AdminError("cannot set 'node': use 'ha-manager migrate' or 'relocate'", ExitCode.USAGE)
    changes = check_options(schema.RESOURCES, rtype, options, "unknown option '{key}' for {type} resources")
    resets = check_delete(schema.RESOURCES, rtype, delete, "")
    _check_agent(rtype, options)
    bad_delete = set(delete) & set(options)
    if bad_delete:
        raise AdminError(f"cannot set and delete '{sorted(bad_delete)[0]}' at once", ExitCode.USAGE)
    ms, _ = rec.read_manager_status(store)
    sd = ms.service_status.get(sid)
    if sd is not None and sd.state == ServiceState.ERROR and options.get("state") != "disabled":
        raise AdminError(
            f"service '{sid}' in error state, must be disabled and fixed first", ExitCode.REFUSED
        )
    if options.get("group"):
        _check_group_use(store, options["group"])
        _check_group_not_in_rule(store, sid)

    def edit(conf: ServiceConfig) -> None:
        cd = conf.services.get(sid)
        if cd is None:
            raise AdminError(f"no such resource '{sid}'", ExitCode.NOT_FOUND)
        for prop, value in changes:
            schema.RESOURCES.assign(cd, prop, value)
        for prop in resets:
            schema.RESOURCES.reset(cd, prop)

    return _edit(store, edit, digest)


def remove_resource(store: Store, sid: str, purge: bool = True) -> list[str]:
    """Remove a resource; with ``purge`` also from the rules, deleting rules left empty.

    Returns the ids of the rules that were changed or deleted.
    """
    sid = normalize_sid(sid)

    def edit(conf: ServiceConfig) -> None:
        if sid not in conf.services:
            raise AdminError(f"no such resource '{sid}'", ExitCode.NOT_FOUND)
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
        edit_file(store, rec.RULES_CFG, parse_rules_cfg, format_rules_cfg, purge_rules)
    return touched


def _rules_resources(store: Store) -> set[str]:
    conf, _ = read_rules(store)
    return {sid for r in conf.rules.values() for sid in r.resources}
