"""Quorum arithmetic, as a pure function.

A node is quorate while the set of nodes it can see (itself included) holds a
strict majority of the expected votes. One vote per node.

Two-node clusters: a strict majority of 2 is 2, so by default losing either
node (or the link between them) makes *both* non-quorate, and the HA stack
freezes rather than risking a split brain. ``tie_breaker=True`` resolves an
exact 50/50 split in favour of the partition holding the lowest-named
configured node: with nodes ``a`` and ``b``, ``a`` stays quorate alone and
``b`` does not. That keeps services running when ``b`` dies, but if ``a``
dies, ``b`` also stops (it cannot tell a dead ``a`` from a cut link). Every
node must use the same setting, or two partitions may both believe they win.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from bus.errors import ConfigError


@dataclass(frozen=True, slots=True)
class QuorumView:
    quorate: bool
    votes: int
    expected: int
    needed: int
    members: tuple[str, ...]


def quorum_view(
    configured: Collection[str],
    seen: Collection[str],
    *,
    expected_votes: int | None = None,
    tie_breaker: bool = False,
) -> QuorumView:
    """Decide quorum for a node that currently sees ``seen`` (itself included).

    ``expected_votes`` overrides the vote total (e.g. during planned
    maintenance on a 5-node cluster with 2 nodes gone, set 3); it must be at
    least 1. Nodes in ``seen`` that are not configured carry no vote.
    """
    if not configured:
        raise ConfigError("membership is empty")
    expected = len(configured) if expected_votes is None else expected_votes
    if expected < 1:
        raise ConfigError("expected_votes must be >= 1")
    members = tuple(sorted(set(seen) & set(configured)))
    votes = len(members)
    needed = expected // 2 + 1
    quorate = votes >= needed
    # SAFETY: the tie-breaker only applies to an *exact* half, and only the
    # side holding the globally lowest name may use it; both sides evaluate
    # the same rule over the same configuration, so at most one side wins.
    if not quorate and tie_breaker and expected % 2 == 0 and votes * 2 == expected:
        quorate = min(configured) in members
    return QuorumView(quorate, votes, expected, needed, members)
