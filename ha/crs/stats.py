"""The stats the ``static`` and ``dynamic`` schedulers read through the Env (BEHAVIOUR.md §5.10).

Node stats: ``maxcpu`` (CPUs) and ``maxmem`` (bytes), plus for ``dynamic`` the
measured ``cpu`` (cores in use) and ``mem`` (bytes in use). Service stats: the
configured ``maxcpu``/``maxmem``, plus for ``dynamic`` the measured ``cpu``/``mem``.
"""

from __future__ import annotations

from dataclasses import dataclass

STATIC = "static"
DYNAMIC = "dynamic"
BASIC = "basic"
MODES = (BASIC, STATIC, DYNAMIC)


@dataclass(slots=True, frozen=True)
class NodeStats:
    maxcpu: float
    maxmem: float
    cpu: float = 0.0
    mem: float = 0.0


@dataclass(slots=True, frozen=True)
class ServiceStats:
    maxcpu: float
    maxmem: float
    cpu: float = 0.0
    mem: float = 0.0


@dataclass(slots=True, frozen=True)
class GuestInfo:
    """A guest as the stats source sees it (HA-managed or not): where, requested state, running."""

    node: str
    state: str
    running: bool
