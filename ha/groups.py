"""HA groups as node-affinity rules (BEHAVIOUR.md §5.14)."""

from __future__ import annotations

import re

from ha.config.groups import GroupConfig
from ha.config.resources import ServiceConfig
from ha.config.rules import NODE_AFFINITY, Rule, RulesConfig


def apply_group_failback(groups: GroupConfig, sc: ServiceConfig) -> None:
    """Every round: a resource in a group gets ``failback = not group.nofailback``."""
    for cd in sc.services.values():
        if cd.group is None:
            continue
        group = groups.groups.get(cd.group)
        if group is not None:
            cd.failback = not group.nofailback


def add_group_rules(rules: RulesConfig, groups: GroupConfig, sc: ServiceConfig) -> None:
    """Add one in-memory rule ``ha-group-{group}`` per group used by a resource."""
    members: dict[str, set[str]] = {}
    for sid in sorted(sc.services):
        gid = sc.services[sid].group
        if gid is not None and gid in groups.groups:
            members.setdefault(gid, set()).add(sid)
    for gid in sorted(members):
        group = groups.groups[gid]
        rid = f"ha-group-{gid}"
        rules.rules[rid] = Rule(
            id=rid,
            type=NODE_AFFINITY,
            resources=members[gid],
            order=rules.next_order(),
            nodes=dict(group.nodes),
            strict=group.restricted,
            comment=group.comment if group.comment is not None else f"Generated from HA group '{gid}'.",
        )


def parse_version(v: str) -> tuple[int, int, int, int | None] | None:
    """``major.minor(.|-)patch[~rev]`` -> tuple; ``None`` when unparsable."""
    m = re.fullmatch(r"(\d+)\.(\d+)[.-](\d+)(?:~(\d+))?", v.strip())
    if not m:
        return None
    rev = int(m.group(4)) if m.group(4) is not None else None
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), rev


def version_at_least(version: str, minimum: str) -> bool:
    """Compare like the reference: ``~rev`` only counts if the version has one."""
    a, b = parse_version(version), parse_version(minimum)
    if a is None or b is None:
        return False
    if a[:3] != b[:3]:
        return a[:3] > b[:3]
    if a[3] is None:  # a release is newer than any ~rev pre-release of the same triple
        return True
    return b[3] is None or a[3] >= b[3]
