"""The link monitor: which peers are up, and whether this node is quorate.

Every ``heartbeat_interval`` the node sends a Heartbeat to each peer, and one
to a peer the moment its link to it comes up (so a peer is up within a round
trip of both links, not at the next tick). A peer
is up once its heartbeat arrived and our own DEALER to it completed its
handshake (both directions work, seen through the DEALER's socket monitor),
until nothing has been heard from it for ``peer_timeout``; the node is
quorate per :func:`bus.quorum.quorum_view`. Changes are delivered to
subscribers as PeerUp/PeerDown/QuorumLost/QuorumRegained envelopes sent by
the node itself (docs/PROTOCOL.md section 9). The state machine per peer is
:class:`bus.membership.PeerTracker`; this module feeds it and announces what
it decides.

Everything here runs on the transport's I/O thread, which owns the monitor
sockets; only :attr:`LinkMonitor.quorum` and :meth:`LinkMonitor.up` are read
from other threads (one reference read each).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable

import zmq
from loguru import logger
from zmq.utils.monitor import recv_monitor_message

from bus.config import TransportConfig
from bus.guard import GUARD_EVENTS, InboundGuard
from bus.membership import Membership, PeerTracker
from bus.messages import Heartbeat, Message, PeerUp, QuorumLost, QuorumRegained
from bus.peers import PeerLink
from bus.quorum import QuorumView, quorum_view
from bus.ratelog import RateLimitedLog

HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
# What a peer DEALER's monitor reports: its link going up or down, and failures.
LINK_EVENTS = HANDSHAKE_FAILED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED


class LinkMonitor:
    """Heartbeats out; heartbeats, traffic and link events in; peer and quorum events out.

    ``frame(msg)`` encodes a message of this node, ``emit(msg)`` delivers one
    to the local subscribers, ``count(key)`` bumps an I/O-thread counter.
    """

    def __init__(
        self,
        node: str,
        membership: Membership,
        config: TransportConfig,
        incarnation: int,
        *,
        frame: Callable[[Message], bytes],
        emit: Callable[[Message], None],
        count: Callable[[str], None],
        rlog: RateLimitedLog,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        self.node = node
        self.membership = membership
        self.config = config
        self.incarnation = incarnation
        self._frame, self._emit, self._count, self._rlog = frame, emit, count, rlog
        self._clock, self._wall_clock = clock, wall_clock
        self.tracker = PeerTracker((p.name for p in membership.others(node)), config.peer_timeout)
        self.quorum = self._compute_quorum(frozenset())
        self._quorum_announced = False
        self._hb_seq = itertools.count(1)
        # monitor socket -> (the socket it watches, the peer's link or None for the ROUTER)
        self._monitors: dict[zmq.Socket[bytes], tuple[zmq.Socket[bytes], PeerLink | None]] = {}
        self._guard: InboundGuard | None = None  # of the ROUTER's inbound connections

    def up(self) -> frozenset[str]:
        return self.tracker.up()

    # -- socket monitors

    def watch(
        self,
        sock: zmq.Socket[bytes],
        events: int,
        link: PeerLink | None = None,
        guard: InboundGuard | None = None,
    ) -> zmq.Socket[bytes]:
        """Monitor ``sock`` (our DEALER of ``link``, or the ROUTER when None, with its ``guard``);
        returns the monitor socket to poll.

        (libzmq allows one monitor per socket: the ROUTER's also feeds its guard.)
        """
        if guard is not None:
            self._guard, events = guard, events | GUARD_EVENTS
        mon = sock.get_monitor_socket(events)
        self._monitors[mon] = (sock, link)
        return mon

    def unwatch(self, sock: zmq.Socket[bytes]) -> zmq.Socket[bytes] | None:
        """Stop monitoring ``sock`` (a DEALER about to be closed); its monitor socket, for the
        caller to unregister and close (disabled first, see :meth:`close_monitors`)."""
        for mon, (owner, _) in list(self._monitors.items()):
            if owner is sock:
                with contextlib.suppress(zmq.ZMQError):
                    owner.disable_monitor()
                del self._monitors[mon]
                return mon
        return None

    def set_membership(self, membership: Membership) -> None:
        """The members changed (one at a time, :func:`bus.membership.one_member_change`):
        track the new one, forget the one that left, and count votes by the new list."""
        old = set(self.membership.names)
        self.membership = membership
        for name in sorted(old - set(membership.names)):
            down = self.tracker.remove(name)
            if down is not None:
                logger.info("bus {}: peer {} left the membership", self.node, name)
                self._emit(down)
        for peer in membership.others(self.node):
            if peer.name not in old:
                self.tracker.add(peer.name)
        self.update_quorum()

    def monitor_sockets(self) -> list[zmq.Socket[bytes]]:
        return list(self._monitors)

    def close_monitors(self) -> None:
        # Disable first, close our reading ends after: libzmq sends a monitor event
        # blocking, under the watched socket's monitor lock, so an event sent after our
        # end is closed never completes, and disable_monitor() (which waits for that
        # lock, holding the GIL) would hang the whole process (tests/bus/test_links_close.py).
        for owner, _ in self._monitors.values():
            with contextlib.suppress(zmq.ZMQError):
                owner.disable_monitor()
        for sock in [*self._monitors]:
            sock.close(linger=0)

    def handle_event(self, mon: zmq.Socket[bytes]) -> None:
        """Read one event from a monitor socket."""
        event = recv_monitor_message(mon)
        _, link = self._monitors[mon]
        peer = link.name if link is not None else ""
        kind = event["event"]
        if link is None and kind & GUARD_EVENTS:
            if self._guard is not None:
                self._guard.event(kind, int(event["value"]))
            return
        if link is not None and kind in (zmq.EVENT_HANDSHAKE_SUCCEEDED, zmq.EVENT_DISCONNECTED):
            connected = kind == zmq.EVENT_HANDSHAKE_SUCCEEDED
            logger.debug("bus {}: link to {} {}", self.node, peer, "up" if connected else "down")
            if connected:
                link.take_new_connections()  # from here on the link is usable, as PeerUp promises
                # greet it now: it counts us up once it heard us and its own link is up, not at
                # our next tick (up to heartbeat_interval later). Only sooner: the ticks go on
                if not link.send_heartbeat(self._frame(self._heartbeat())):
                    self._count("heartbeat_unsent")
            up = self.tracker.link(peer, connected, self._clock())
            if up is not None:
                self._peer_up(up)
            return
        self._count("handshake_failed")
        endpoint = event.get("endpoint", b"")
        where = endpoint.decode("ascii", "replace") if isinstance(endpoint, bytes) else str(endpoint)
        self._rlog.warning(
            ("handshake", peer, where),
            "bus {}: CURVE/ZMTP handshake failed ({} {}, code {})",
            self.node,
            peer or "inbound",
            where,
            event.get("value"),
        )

    # -- heartbeats

    def _heartbeat(self) -> Heartbeat:
        return Heartbeat(self.node, self.incarnation, next(self._hb_seq), self._wall_clock())

    def send_heartbeats(self, links: Iterable[PeerLink]) -> None:
        frame = self._frame(self._heartbeat())
        for link in links:
            if not link.send_heartbeat(frame):
                # Expected while a peer is down; not a loss anyone waits for.
                self._count("heartbeat_unsent")

    def next_heartbeat_in(self) -> float:
        """Seconds to the next heartbeat: the next multiple of the interval in wall-clock time.

        Every node sends at the same instants (to within their clocks'
        agreement), so a node's peers' heartbeats arrive together and are read
        in one or a few wake-ups of the I/O thread instead of one each (issue #17).
        SAFETY: never more than ``heartbeat_interval`` after the previous one,
        whatever the wall clock does (a step only moves one send earlier), so a
        peer hears us at least as often as before and peer-down detection
        (``peer_timeout``) is unchanged.
        """
        interval = self.config.heartbeat_interval
        left = interval - self._wall_clock() % interval
        return left if 0 < left <= interval else interval

    def heartbeat(self, sender: str, incarnation: int, now: float) -> None:
        """A (validated) heartbeat from member ``sender`` arrived."""
        up = self.tracker.heartbeat(sender, incarnation, now)
        if up is not None:
            self._peer_up(up)

    # -- up, down, quorum

    def _peer_up(self, up: PeerUp) -> None:
        logger.info("bus {}: peer {} up (incarnation {})", self.node, up.node, up.incarnation)
        self._emit(up)
        self.update_quorum()

    def expire(self, now: float) -> float:
        """Report the peers silent for too long; return when to look again."""
        downs = self.tracker.expire(now)
        for down in downs:
            logger.warning(
                "bus {}: peer {} down (silent for {:.2f}s)", self.node, down.node, self.config.peer_timeout
            )
            self._emit(down)
        if downs:
            self.update_quorum()
        # A peer expires at its last_heard + peer_timeout; last_heard only
        # grows, and a peer that starts being tracked later gets a later
        # expiry than now + peer_timeout. So this is never late; at worst a
        # turn wakes early and finds nothing to do.
        expiry = self.tracker.next_expiry()
        return expiry if expiry is not None else now + self.config.peer_timeout

    def _compute_quorum(self, up: frozenset[str]) -> QuorumView:
        return quorum_view(
            self.membership.names,
            up | {self.node},
            expected_votes=self.config.expected_votes,
            tie_breaker=self.config.tie_breaker,
        )

    def update_quorum(self) -> None:
        old, new = self.quorum, self._compute_quorum(self.tracker.up())
        self.quorum = new
        # The very first evaluation reports a quorate start as "regained".
        first = not self._quorum_announced
        self._quorum_announced = True
        if new.quorate == old.quorate and not (first and new.quorate):
            return
        if new.quorate:
            logger.info(
                "bus {}: quorum regained ({}/{} votes: {})",
                self.node,
                new.votes,
                new.expected,
                ",".join(new.members),
            )
            self._emit(QuorumRegained(self.node, new.members))
        else:
            logger.warning(
                "bus {}: quorum lost ({}/{} votes: {})",
                self.node,
                new.votes,
                new.expected,
                ",".join(new.members),
            )
            self._emit(QuorumLost(self.node, new.members))
