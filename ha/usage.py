"""Node usage accounting for placement (BEHAVIOUR.md §5.10): the interface and the ``basic`` scheduler.

The ``static`` and ``dynamic`` schedulers are ``ha.crs.usage.LoadUsage``.
"""

from __future__ import annotations

from collections.abc import Container
from typing import TYPE_CHECKING, Protocol

from ha.states import ServiceState

if TYPE_CHECKING:
    from ha.crs.usage import BalanceCandidate, BalancingMigration

S = ServiceState
_CURRENT_USED = frozenset(
    {S.STARTED, S.REQUEST_STOP, S.FENCE, S.FREEZE, S.ERROR, S.RECOVERY, S.MIGRATE, S.RELOCATE}
)
_TARGET_USED = frozenset({S.MIGRATE, S.RELOCATE, S.REQUEST_START_BALANCE})


def used_nodes(
    state: str, node: str | None, target: str | None, online: Container[str]
) -> tuple[str | None, str | None]:
    """(current, target) nodes a service occupies, counting only online nodes."""
    current = node if state in _CURRENT_USED and node in online else None
    tgt = target if state in _TARGET_USED and target is not None and target in online else None
    return current, tgt


class Usage(Protocol):
    """What placement and the manager ask of a scheduler's usage (one per round)."""

    mode: str
    nodes: dict[str, set[str]]  # online node -> sids assigned to it

    def add_node(self, node: str) -> None: ...

    def contains_node(self, node: str | None) -> bool: ...

    def list_nodes(self) -> list[str]: ...

    def add_service_usage_to_node(self, node: str, sid: str) -> bool: ...

    def add_service_usage(
        self, sid: str, state: str, node: str | None, target: str | None, running: bool = False
    ) -> None: ...

    def add_guest_usage(self, sid: str, state: str, node: str, running: bool) -> None: ...

    def remove_service_usage(self, sid: str) -> None: ...

    def score_nodes_to_start_service(self, sid: str) -> dict[str, float]: ...

    def imbalance(self) -> float: ...

    def select_best_balancing_migration(
        self, candidates: list[BalanceCandidate], method: str
    ) -> BalancingMigration | None: ...


class BasicUsage:
    """``basic`` scheduler: a node's score is the number of services on it."""

    mode = "basic"

    def __init__(self) -> None:
        self.nodes: dict[str, set[str]] = {}
        self._where: dict[str, set[str]] = {}

    def add_node(self, node: str) -> None:
        self.nodes.setdefault(node, set())

    def contains_node(self, node: str | None) -> bool:
        return node is not None and node in self.nodes

    def list_nodes(self) -> list[str]:
        return sorted(self.nodes)

    def add_service_usage_to_node(self, node: str, sid: str) -> bool:
        sids = self.nodes.get(node)
        if sids is None:
            return False
        sids.add(sid)
        self._where.setdefault(sid, set()).add(node)
        return True

    def add_service_usage(
        self, sid: str, state: str, node: str | None, target: str | None, running: bool = False
    ) -> None:
        current, tgt = used_nodes(state, node, target, self.nodes)
        if current is not None:
            self.add_service_usage_to_node(current, sid)
        if tgt is not None:
            self.add_service_usage_to_node(tgt, sid)

    def add_guest_usage(self, sid: str, state: str, node: str, running: bool) -> None:
        self.add_service_usage(sid, state, node, None, running)

    def remove_service_usage(self, sid: str) -> None:
        for node in self._where.pop(sid, ()):
            self.nodes[node].discard(sid)

    def score_nodes_to_start_service(self, sid: str) -> dict[str, float]:
        """Lower is better; the service counts on its own current node."""
        return {node: float(len(sids)) for node, sids in self.nodes.items()}

    def imbalance(self) -> float:
        return 0.0  # §5.10: auto-rebalance never triggers in basic mode

    def select_best_balancing_migration(
        self, candidates: list[BalanceCandidate], method: str
    ) -> BalancingMigration | None:
        return None
