"""Small helpers over service_status shared by CRM, LRM and Manager."""

from __future__ import annotations

from collections.abc import Mapping

from ha.records import ServiceData
from ha.states import ServiceState

_NOT_ACTIVE = frozenset(
    {ServiceState.STOPPED, ServiceState.FREEZE, ServiceState.ERROR, ServiceState.REQUEST_START}
)


def count_fenced_services(ss: Mapping[str, ServiceData], node: str) -> int:
    """Services of ``node`` in state ``fence`` (a node being fenced must not act)."""
    return sum(1 for sd in ss.values() if sd.node == node and sd.state == ServiceState.FENCE)


def count_active_services(ss: Mapping[str, ServiceData], node: str) -> int:
    """Services on or moving to ``node`` that are not stopped/frozen/error/request_start (§3.2.2)."""
    return sum(
        1 for sd in ss.values() if sd.node and node in (sd.node, sd.target) and sd.state not in _NOT_ACTIVE
    )
