"""The membership records in the store (issue #15; docs/OPERATIONS.md "Membership").

``membership``: the store's copy of the member list (``ha-cluster add-node``/
``remove-node`` write it). ``nodes/<node>/membership``: each node's word on
the version it runs by and on the members its bus counts up.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from store.base import Store

if TYPE_CHECKING:
    from admin.cluster import ClusterConfig


# The store's copy of the membership (``ha-cluster add-node``/``remove-node`` write it) and each
# node's word on which version it runs by (``nodes/<node>/membership``, written by the node).
MEMBERSHIP_RECORD = "membership"


def member_version_record(node: str) -> str:
    return f"nodes/{node}/membership"


def publish_member_version(
    store: Store, node: str, version: int, members: list[str], up: list[str] | None = None
) -> None:
    """``nodes/<node>/membership``: the membership version NODE runs by and the members its bus
    counts up, itself included (written by the node, again whenever that set changed)."""
    view: dict[str, object] = {"version": version, "members": sorted(members)}
    if up is not None:
        view["up"] = sorted(up)
    store.write(member_version_record(node), json.dumps(view).encode())


def _said(store: Store, node: str, key: str) -> object:
    """Field KEY of NODE's ``nodes/<node>/membership``; None when missing or unreadable."""
    rec = store.read(member_version_record(node))
    if rec is None:
        return None
    try:
        view = json.loads(rec.data)
    except ValueError:
        return None
    return view.get(key) if isinstance(view, dict) else None


def read_member_up(store: Store, node: str) -> list[str] | None:
    """The members NODE's bus counted up when it last said (itself included); None if unknown."""
    up = _said(store, node, "up")
    return [str(n) for n in up] if isinstance(up, list) else None


def read_member_version(store: Store, node: str) -> int | None:
    """The membership version NODE said it runs by; None before it said any."""
    v = _said(store, node, "version")
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def publish_membership(store: Store, c: ClusterConfig) -> None:
    """The store's copy of the membership (``membership``): version and members with endpoints."""
    data = {"version": c.config_version, "nodes": dict(sorted(c.nodes.items()))}
    store.write(MEMBERSHIP_RECORD, json.dumps(data).encode())


__all__ = [
    "MEMBERSHIP_RECORD",
    "member_version_record",
    "publish_member_version",
    "publish_membership",
    "read_member_up",
    "read_member_version",
]
