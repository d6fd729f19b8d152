"""``ha-manager groupadd/groupset/groupremove``: HA groups (§7.2), first-class on any cluster.

A group used by a resource is applied by the master as a node-affinity rule
named ``ha-group-<group>`` (ha/groups.py, §5.14), in memory on a live cluster
(groups.cfg is never deleted there, actors/env.py ``LiveEnv.migrate_groups``).
So a group's id must not clash with such a rule, and a resource follows
either its group or a node-affinity rule, not both (admin/resources.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from admin.configfiles import (
    check_delete,
    check_node,
    check_options,
    edit_file,
    read_config,
)
from admin.errors import AdminError, ExitCode
from ha.config import schema
from ha.config.groups import Group, GroupConfig, format_groups_cfg, parse_groups_cfg
from ha.config.schema import CONFIG_ID, Kind, Prop
from store import records as rec
from store.base import Store


def _check_group_options(options: Mapping[str, str], nodes: list[str]) -> list[tuple[Prop, Any]]:
    """``schema.GROUPS`` checks every value; the nodes of a node list must be cluster members."""
    changes = check_options(schema.GROUPS, "group", options, "unknown group option '{key}'", adding=True)
    for prop, value in changes:
        if prop.kind == Kind.NODE_LIST:
            for n in value:
                check_node(n, nodes)
    return changes


def _groups_edit(store: Store, edit: Callable[[GroupConfig], None], digest: str | None = None) -> str:
    return edit_file(store, rec.GROUPS_CFG, parse_groups_cfg, format_groups_cfg, edit, digest)


def group_add(store: Store, group: str, options: Mapping[str, str], nodes: list[str]) -> Group:
    if not CONFIG_ID.match(group):
        raise AdminError(f"invalid group id '{group}'", ExitCode.USAGE)
    if not options.get("nodes"):
        raise AdminError("group: --nodes is required", ExitCode.USAGE)
    g = Group(group, {})
    for prop, value in _check_group_options(options, nodes):
        schema.GROUPS.assign(g, prop, value)

    def edit(conf: GroupConfig) -> None:
        if group in conf.groups:
            raise AdminError(f"group '{group}' already defined", ExitCode.REFUSED)
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
    if not options and not delete:
        raise AdminError("nothing to change (give an option or --delete)", ExitCode.USAGE)
    changes = _check_group_options(options, nodes)
    resets = check_delete(schema.GROUPS, "group", delete, "group ")

    def edit(conf: GroupConfig) -> None:
        g = conf.groups.get(group)
        if g is None:
            raise AdminError(f"no such group '{group}'", ExitCode.NOT_FOUND)
        for prop, value in changes:
            schema.GROUPS.assign(g, prop, value)
        for prop in resets:
            schema.GROUPS.reset(g, prop)

    return _groups_edit(store, edit, digest)


def group_remove(store: Store, group: str) -> None:
    conf, _ = read_config(store)
    users = sorted(sid for sid, cd in conf.services.items() if cd.group == group)

    def edit(gc: GroupConfig) -> None:
        if group not in gc.groups:
            raise AdminError(f"no such group '{group}'", ExitCode.NOT_FOUND)
        if users:
            raise AdminError(f"group '{group}' is used by resource '{users[0]}'", ExitCode.REFUSED)
        del gc.groups[group]

    _groups_edit(store, edit)
