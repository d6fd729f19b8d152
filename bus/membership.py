"""Who is in the cluster, and which of them this node can currently hear.

:class:`Membership` is configuration (names and endpoints). :class:`PeerTracker`
turns "heard from X at time t" into up/down transitions; it never reads the
clock itself, so tests drive it with plain numbers.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass

from bus.errors import ConfigError, UnknownPeerError
from bus.messages import PeerDown, PeerUp

# Node names become ZeroMQ routing ids, key file names and log fields, so keep
# them boring: this also rules out path tricks in bus.keys.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ConfigError(f"invalid node name {name!r} (letters, digits, '_', '.', '-'; max 63)")
    return name


@dataclass(frozen=True, slots=True)
class PeerSpec:
    name: str
    endpoint: str

    def __post_init__(self) -> None:
        check_name(self.name)
        if "://" not in self.endpoint:
            raise ConfigError(f"endpoint of {self.name} must look like tcp://host:port")


@dataclass(frozen=True, slots=True)
class Membership:
    """The configured nodes (including the local one), in a stable order."""

    peers: tuple[PeerSpec, ...]

    def __post_init__(self) -> None:
        if not self.peers:
            raise ConfigError("membership is empty")
        names = [p.name for p in self.peers]
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate node names in {names}")

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> Membership:
        return cls(tuple(PeerSpec(n, e) for n, e in pairs))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.peers)

    def __contains__(self, name: object) -> bool:
        return any(p.name == name for p in self.peers)

    def __iter__(self) -> Iterator[PeerSpec]:
        return iter(self.peers)

    def __len__(self) -> int:
        return len(self.peers)

    def endpoint(self, name: str) -> str:
        for p in self.peers:
            if p.name == name:
                return p.endpoint
        raise UnknownPeerError(name)

    def others(self, name: str) -> tuple[PeerSpec, ...]:
        return tuple(p for p in self.peers if p.name != name)


def one_member_change(old: Collection[str], new: Collection[str]) -> tuple[str | None, str | None]:
    """``(added, removed)`` between two member sets; :class:`ConfigError` unless they differ by
    at most one member, added *or* removed (``(None, None)``: the same members).

    SAFETY: the rule etcd and corosync follow for a running cluster. Any majority of
    the old members (``n // 2 + 1`` of ``n``) and any majority of the new ones share
    a node: with one member added (``m = n + 1`` nodes in all) the two sizes add up to
    ``n + 2 > m``, with one removed (``n`` in all) to ``n + 1 > n``. So while the
    change spreads, some nodes counting by the old list and some by the new, two
    partitions can never both be quorate. Two members at once break it: from
    ``{a,b,c}`` to ``{a,b,c,d,e}``, ``{a,b}`` is a majority of the old list and
    ``{c,d,e}`` one of the new; a swap (``{a,b,c}`` to ``{a,b,d}``) too: ``{b,c}`` and ``{a,d}``.
    """
    before, after = set(old), set(new)
    added, removed = sorted(after - before), sorted(before - after)
    if len(added) + len(removed) > 1:
        raise ConfigError(
            f"membership may change by one member at a time (adding {added or 'none'},"
            f" removing {removed or 'none'})"
        )
    return (added[0] if added else None), (removed[0] if removed else None)


@dataclass(slots=True)
class _PeerState:
    up: bool = False
    last_heard: float = float("-inf")
    incarnation: int | None = None
    linked: bool = False
    announced: int | None = None


class PeerTracker:
    """Up/down view of the peers, driven by arrival times and link events.

    A peer comes *up* once both directions work: we heard its heartbeat
    (inbound) and our own connection to it completed its handshake
    (outbound, :meth:`link`). It goes *down* when nothing at all has been
    heard from it for ``timeout`` seconds; a dropped TCP link alone does not
    take it down, so a reconnect blip cannot flap the quorum. A heartbeat
    with a new incarnation means the peer restarted; that is reported as a
    fresh :class:`PeerUp` so that re-send logic (see
    :class:`bus.reliability.Outbox`) kicks in.
    """

    def __init__(self, peers: Iterable[str], timeout: float) -> None:
        if timeout <= 0:
            raise ConfigError("peer timeout must be > 0")
        self.timeout = timeout
        self._peers = {name: _PeerState() for name in peers}

    def add(self, node: str) -> None:
        """Track a new member (down until its heartbeat and our link both arrive)."""
        self._peers.setdefault(node, _PeerState())

    def remove(self, node: str) -> PeerDown | None:
        """Stop tracking a member that left the membership; a PeerDown if it was up."""
        st = self._peers.pop(node, None)
        return PeerDown(node) if st is not None and st.up else None

    def _maybe_up(self, node: str, st: _PeerState) -> PeerUp | None:
        if not st.linked or st.incarnation is None or st.incarnation == st.announced:
            return None
        st.up = True
        st.announced = st.incarnation
        return PeerUp(node, st.incarnation)

    def heartbeat(self, node: str, incarnation: int, now: float) -> PeerUp | None:
        st = self._peers.get(node)
        if st is None:
            return None
        st.last_heard = now
        st.incarnation = incarnation
        return self._maybe_up(node, st)

    def link(self, node: str, connected: bool, now: float) -> PeerUp | None:
        """Our outbound connection to ``node`` completed (or lost) its handshake."""
        st = self._peers.get(node)
        if st is None:
            return None
        st.linked = connected
        if connected and now - st.last_heard < self.timeout:
            return self._maybe_up(node, st)
        return None

    def traffic(self, node: str, now: float) -> None:
        """Any valid message proves liveness, but only a heartbeat brings a peer up."""
        st = self._peers.get(node)
        if st is not None and st.up:
            st.last_heard = now

    def expire(self, now: float) -> list[PeerDown]:
        downs: list[PeerDown] = []
        for name, st in self._peers.items():
            if st.incarnation is not None and now - st.last_heard >= self.timeout:
                st.incarnation = st.announced = None
                if st.up:
                    st.up = False
                    downs.append(PeerDown(name))
        return downs

    def next_expiry(self) -> float | None:
        times = [st.last_heard + self.timeout for st in self._peers.values() if st.incarnation is not None]
        return min(times) if times else None

    def up(self) -> frozenset[str]:
        return frozenset(n for n, st in self._peers.items() if st.up)

    def is_up(self, node: str) -> bool:
        st = self._peers.get(node)
        return st is not None and st.up

    def is_linked(self, node: str) -> bool:
        st = self._peers.get(node)
        return st is not None and st.linked
