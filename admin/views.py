"""Config records as the API and ``ha-manager ... --output-format json`` show them."""

from __future__ import annotations

from typing import Any

from admin.configfiles import normalize_sid, read_config, read_groups, read_rules
from ha.config.groups import Group
from ha.config.resources import ResourceConfig
from ha.config.rules import NODE_AFFINITY, Rule
from ha.groups import add_group_rules
from ha.rules import check_feasibility
from store.base import Store


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
    """The rules with their effective state: ``in use`` or ``ignored (conflicts)`` (§5.13.2).

    The master applies every group that a resource uses as a node-affinity rule
    ``ha-group-<group>`` (ha/groups.py, §5.14; in memory on a live cluster, where
    groups.cfg stays): those are listed too, with ``group`` naming their source,
    and they count in the conflict check as they do for the master (issue #13).
    """
    conf, version = read_rules(store)
    groups, _ = read_groups(store)
    services, _ = read_config(store)
    merged = conf.copy()
    add_group_rules(merged, groups, services)
    errors = check_feasibility(merged, len(nodes))
    out: list[dict[str, Any]] = []
    for r in sorted(merged.rules.values(), key=lambda r: (r.order, r.id)):
        if rtype is not None and r.type != rtype:
            continue
        if resource is not None and normalize_sid(resource) not in r.resources:
            continue
        d = rule_to_dict(r)
        d["enabled"] = int(not r.disable)
        if r.id not in conf.rules:
            d["group"] = r.id.removeprefix("ha-group-")
        if r.disable:
            d["state"] = "disabled"
        elif r.id in errors:
            d["state"] = "ignored (conflicts)"
            d["errors"] = {p: list(m) for p, m in sorted(errors[r.id].items())}
        else:
            d["state"] = "in use"
        if "group" in d:
            d["state"] += f" (group {d['group']})"
        out.append(d)
    return out, version
