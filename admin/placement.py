"""Where a resource without a node starts (issue #13): ``ha-manager add SID`` without ``--node``
and a ``resources.cfg`` section without ``node`` (the chapter's ``ct: 102``).

The reference never asks: a guest lives on the node it was created on. Ours
places the way the manager places a service (BEHAVIOUR.md §5.9, ``basic``
scheduler): among the allowed nodes of the highest priority (the group's,
if the resource names one; all nodes otherwise), online ones first, the
least loaded (requested-started resources per node), the node the command
runs on before the others, then by name.

A section without ``node`` gets a location record (``locations/<sid>``),
written create-only: when two writers place it at once, one wins and the
other reads its choice, so a resource never has two nodes.
"""

from __future__ import annotations

from collections.abc import Iterable

from ha.config.groups import GroupConfig, parse_groups_cfg
from ha.config.resources import parse_resources_cfg
from ha.config.sectionconfig import parse_sections
from ha.errors import HaError
from ha.states import NodeState, RequestedState
from store import records as rec
from store.base import ABSENT, Store, VersionConflict


def _online(store: Store, nodes: list[str]) -> list[str]:
    try:
        ms, _ = rec.read_manager_status(store)
    except HaError:
        return list(nodes)
    up = [n for n in nodes if ms.node_status.get(n) == NodeState.ONLINE]
    return up if ms.node_status and up else list(nodes)


def _load(store: Store, nodes: Iterable[str], extra: dict[str, str]) -> dict[str, int]:
    text, _ = rec.read_text(store, rec.RESOURCES_CFG)
    locations = {**rec.read_locations(store), **extra}
    conf, _errors = parse_resources_cfg(text, rec.RESOURCES_CFG, nodes=locations)
    load = dict.fromkeys(nodes, 0)
    for cd in conf.services.values():
        if cd.state == RequestedState.STARTED and cd.node in load:
            load[cd.node] += 1
    return load


def choose_node(
    store: Store,
    nodes: list[str],
    local: str | None,
    group: str | None = None,
    groups: GroupConfig | None = None,
    placed: dict[str, str] | None = None,
) -> str:
    """The node a new resource (in ``group``, if given) starts on; see the module doc."""
    online = _online(store, nodes)
    allowed = online
    if group is not None:
        if groups is None:
            text, _ = rec.read_text(store, rec.GROUPS_CFG)
            groups = parse_groups_cfg(text, rec.GROUPS_CFG)[0]
        g = groups.groups.get(group)
        if g is not None:
            members = {n: p for n, p in g.nodes.items() if n in online}
            if not members and g.restricted:  # none of them online: still one of them
                members = {n: p for n, p in g.nodes.items() if n in nodes}
            if members:
                top = max(members.values())
                allowed = sorted(n for n, p in members.items() if p == top)
    load = _load(store, allowed, placed or {})
    return min(allowed, key=lambda n: (load.get(n, 0), n != local, n))


def place_unplaced(store: Store, nodes: list[str], local: str | None) -> dict[str, str]:
    """Give every ``resources.cfg`` section without ``node`` and without a location a node.

    Returns the new placements (sid -> node). A section whose location
    record someone else wrote meanwhile keeps theirs (create-only write).
    """
    text, _ = rec.read_text(store, rec.RESOURCES_CFG)
    sections, _errors = parse_sections(text, rec.RESOURCES_CFG)
    unplaced = [s for s in sections if not s.props.get("node")]
    if not unplaced:
        return {}
    locations = rec.read_locations(store)
    placed: dict[str, str] = {}
    groups: GroupConfig | None = None
    for sec in unplaced:
        sid = f"{sec.type}:{sec.id}"
        if sid in locations or sid in placed:
            continue
        if groups is None:
            gtext, _ = rec.read_text(store, rec.GROUPS_CFG)
            groups = parse_groups_cfg(gtext, rec.GROUPS_CFG)[0]
        node = choose_node(store, nodes, local, sec.props.get("group"), groups, placed)
        try:
            rec.write_location(store, sid, node, ABSENT)
        except VersionConflict:
            continue  # placed by someone else at the same moment: theirs stands
        placed[sid] = node
    return placed
