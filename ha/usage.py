"""Node usage accounting for placement (BEHAVIOUR.md §5.10): the interface and the ``basic`` scheduler.

The ``static`` and ``dynamic`` schedulers are ``ha.crs.usage.LoadUsage``.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from typing import TYPE_CHECKING, Protocol

from ha.records import ServiceData
from ha.states import ServiceState

if TYPE_CHECKING:
    from ha.crs.usage import BalanceCandidate, BalancingMigration

S = ServiceState
_CURRENT_USED = frozenset(
    {S.STARTED, S.REQUEST_STOP, S.FENCE, S.FREEZE, S.ERROR, S.RECOVERY, S.MIGRATE, S.RELOCATE}
)
_TARGET_USED = frozenset({S.MIGRATE, S.RELOCATE, S.REQUEST_START_BALANCE})
# states that occupy the current node only (a ``started`` service, most of a round's services)
CURRENT_ONLY = _CURRENT_USED - _TARGET_USED


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

    def add_services(self, ss: Mapping[str, ServiceData]) -> None:
        """``add_service_usage`` of every service of ``ss``, in sorted sid order."""
        ...

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
        # sid -> the nodes it is on; one-node sets are shared per node (no allocation per service)
        self._where: dict[str, frozenset[str]] = {}
        self._one_set: dict[str, frozenset[str]] = {}

    def add_node(self, node: str) -> None:
        self.nodes.setdefault(node, set())
        self._one_set.setdefault(node, frozenset((node,)))

    def contains_node(self, node: str | None) -> bool:
        return node is not None and node in self.nodes

    def list_nodes(self) -> list[str]:
        return sorted(self.nodes)

    def add_service_usage_to_node(self, node: str, sid: str) -> bool:
        sids = self.nodes.get(node)
        if sids is None:
            return False
        sids.add(sid)
        where = self._where.get(sid)
        if where is None:
            self._where[sid] = self._one_set[node]
        elif node not in where:
            self._where[sid] = where | self._one_set[node]
        return True

    def add_service_usage(
        self, sid: str, state: str, node: str | None, target: str | None, running: bool = False
    ) -> None:
        current, tgt = used_nodes(state, node, target, self.nodes)
        if current is not None:
            self.add_service_usage_to_node(current, sid)
        if tgt is not None:
            self.add_service_usage_to_node(tgt, sid)

    def add_services(self, ss: Mapping[str, ServiceData]) -> None:
        # the common case inlined (a service on one online node): a round adds every service
        nodes, where, one_set = self.nodes, self._where, self._one_set
        for sid in sorted(ss):
            sd = ss[sid]
            node = sd.node
            if sd.state in CURRENT_ONLY and node in nodes and sid not in where:
                nodes[node].add(sid)
                where[sid] = one_set[node]
            else:
                self.add_service_usage(sid, sd.state, node, sd.target, sd.running)

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
