"""``ha-manager groupadd/groupset/groupremove``: HA groups, the legacy form of node affinity (§5.14)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from admin.configfiles import check_node, edit_file, groups_migrated, read_config
from admin.errors import AdminError, ExitCode
from ha.config.groups import Group, GroupConfig, format_groups_cfg, parse_groups_cfg
from ha.config.sectionconfig import CONFIG_ID, parse_bool, parse_node_list
from ha.errors import ConfigError
from store import records as rec
from store.base import Store


def _apply_group_options(g: Group, options: Mapping[str, str], nodes: list[str]) -> None:
    for key, value in options.items():
        try:
            if key == "nodes":
                parsed = parse_node_list(value, key, "command line", None)
                for n in parsed:
                    check_node(n, nodes)
                g.nodes = parsed
            elif key == "restricted":
                g.restricted = parse_bool(value, key, "command line", None)
            elif key == "nofailback":
                g.nofailback = parse_bool(value, key, "command line", None)
            elif key == "comment":
                g.comment = value
            else:
                raise AdminError(f"unknown group option '{key}'", ExitCode.USAGE)
        except ConfigError as e:
            raise AdminError(e.message, ExitCode.USAGE) from None


def _groups_edit(store: Store, edit: Callable[[GroupConfig], None], digest: str | None = None) -> str:
    return edit_file(store, rec.GROUPS_CFG, parse_groups_cfg, format_groups_cfg, edit, digest)


def group_add(store: Store, group: str, options: Mapping[str, str], nodes: list[str]) -> Group:
    if groups_migrated(store):
        raise AdminError("cannot create group: ha groups have been migrated to rules", ExitCode.REFUSED)
    if not CONFIG_ID.match(group):
        raise AdminError(f"invalid group id '{group}'", ExitCode.USAGE)
    if not options.get("nodes"):
        raise AdminError("group: --nodes is required", ExitCode.USAGE)
    g = Group(group, {})
    _apply_group_options(g, options, nodes)

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
    if groups_migrated(store):
        raise AdminError("cannot update group: ha groups have been migrated to rules", ExitCode.REFUSED)
    if not options and not delete:
        raise AdminError("nothing to change (give an option or --delete)", ExitCode.USAGE)

    def edit(conf: GroupConfig) -> None:
        g = conf.groups.get(group)
        if g is None:
            raise AdminError(f"no such group '{group}'", ExitCode.NOT_FOUND)
        _apply_group_options(g, options, nodes)
        for key in delete:
            if key == "comment":
                g.comment = None
            elif key == "restricted":
                g.restricted = False
            elif key == "nofailback":
                g.nofailback = False
            else:
                raise AdminError(f"cannot delete group option '{key}'", ExitCode.USAGE)

    return _groups_edit(store, edit, digest)


def group_remove(store: Store, group: str) -> None:
    if groups_migrated(store):
        raise AdminError("cannot delete group: ha groups have been migrated to rules", ExitCode.REFUSED)
    conf, _ = read_config(store)
    users = sorted(sid for sid, cd in conf.services.items() if cd.group == group)

    def edit(gc: GroupConfig) -> None:
        if group not in gc.groups:
            raise AdminError(f"no such group '{group}'", ExitCode.NOT_FOUND)
        if users:
            raise AdminError(f"group '{group}' is used by resource '{users[0]}'", ExitCode.REFUSED)
        del gc.groups[group]

    _groups_edit(store, edit)
