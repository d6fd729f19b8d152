"""Every option the bus sets on its ROUTER and its peer DEALERs, in one place.

Most of them are security or honesty properties (docs/PROTOCOL.md sections 2
and 6): who may connect, who a connection is, how much it may send, and that
a frame for an unreachable peer is dropped rather than queued. The sockets
are created, bound and connected by :mod:`bus.transport`.
"""

from __future__ import annotations

import zmq

from bus.config import TransportConfig
from bus.keys import CurveKeys


def ms(seconds: float) -> int:
    """A duration as a socket option in milliseconds (at least 1)."""
    return max(1, int(seconds * 1000))


def set_zmtp_heartbeats(s: zmq.Socket[bytes], interval: float, timeout: float, ttl: float) -> None:
    # ZMTP-level heartbeats let libzmq notice a dead TCP connection (e.g.
    # after a partition) and reconnect, instead of trusting a half-open
    # socket until TCP gives up many minutes later. A PING goes out every
    # ``interval``; no answer within ``timeout`` closes the connection. The
    # ``ttl`` in each PING tells the other end to close the connection when
    # nothing at all follows the PING for that long: it must exceed
    # ``interval`` where the other end may send nothing itself (a client), or
    # that end would lose its connection between two PINGs.
    s.setsockopt(zmq.HEARTBEAT_IVL, ms(interval))
    s.setsockopt(zmq.HEARTBEAT_TIMEOUT, ms(timeout))
    s.setsockopt(zmq.HEARTBEAT_TTL, ms(ttl))


def configure_router(
    r: zmq.Socket[bytes], cfg: TransportConfig, keys: CurveKeys | None, cluster: str
) -> None:
    """Our ROUTER, a CURVE server admitting what the ZAP handler (:mod:`bus.zap`) admits when ``keys``.

    SAFETY: with ``keys``, the ZAP handler must already be bound in the
    socket's context; libzmq lets every CURVE client in when none exists.
    ZAP_ENFORCE_DOMAIN closes that hole as a second line.
    """
    r.setsockopt(zmq.LINGER, 0)  # stop() must never hang on undeliverable replies
    r.setsockopt(zmq.RCVHWM, cfg.recv_hwm)
    r.setsockopt(zmq.SNDHWM, cfg.send_hwm)
    # Replies to a client that went away raise EHOSTUNREACH (counted)
    # instead of vanishing silently.
    r.setsockopt(zmq.ROUTER_MANDATORY, 1)
    # SAFETY: no handover. Nobody connects under a name: member DEALERs set
    # no routing id (the ROUTER numbers each connection itself; ids it makes
    # start with a zero byte, which a peer cannot choose), and who speaks is
    # the CURVE key owner the ZAP handler vouched for. With handover (and
    # members connecting as their name) any client key that connected as
    # "node2" took node2's slot and cut its heartbeats off: node2 was
    # declared down and fenced (issue #11).
    r.setsockopt(zmq.ROUTER_HANDOVER, 0)
    # Hard backstop far above the codec limit: libzmq drops the connection
    # of anyone streaming huge frames before we ever buffer them. Frames
    # between the two limits reach the codec and are counted "oversized".
    r.setsockopt(zmq.MAXMSGSIZE, cfg.max_frame_bytes * 4 + 1024)
    # A connection that has not completed its (CURVE) handshake in time is
    # closed: idle connections cannot pile up (bus.guard, issue #11).
    r.setsockopt(zmq.HANDSHAKE_IVL, ms(cfg.handshake_timeout))
    # The ROUTER pings only every ``zmtp_ping_interval`` (10 s; issue #17: a PING
    # and its PONG are two CURVE messages and wake-ups of libzmq's I/O threads, per
    # connection, per interval; at the heartbeat interval, then at peer_timeout,
    # they were most of an idle node's bus traffic). A member's connection does not
    # need them: the member's DEALER watches it itself (configure_dealer).
    # Slower now: closing an inbound connection that died half-open (within
    # zmtp_ping_interval + peer_timeout), and a client that does not ping learning
    # that this node went silent (the TTL, the same).
    # SAFETY: peer-down detection does not use ZMTP heartbeats at all (bus.links:
    # application heartbeats, ``peer_timeout``), and nothing is sent to a member
    # through the ROUTER; a dead inbound connection only holds an fd (and a slot
    # of bus.guard's limits) a little longer.
    ping = cfg.zmtp_ping_interval
    set_zmtp_heartbeats(r, ping, cfg.peer_timeout, ping + cfg.peer_timeout)
    if keys is not None:
        r.setsockopt(zmq.CURVE_SERVER, 1)
        r.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
        r.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
        r.setsockopt(zmq.ZAP_DOMAIN, cluster.encode())
        r.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


def configure_dealer(d: zmq.Socket[bytes], peer: str, cfg: TransportConfig, keys: CurveKeys | None) -> None:
    """Our DEALER to member ``peer``, a CURVE client pinned to its key when ``keys``.

    SAFETY: no ZMQ_ROUTING_ID is set. The peer's ROUTER numbers the
    connection itself and knows us by our CURVE key alone (see the handover
    note in :func:`configure_router`).
    """
    d.setsockopt(zmq.LINGER, 0)
    # SAFETY (honest reachability): only queue onto a completed
    # connection. Without IMMEDIATE, frames for a down peer pile up
    # and arrive, stale, whenever it comes back.
    d.setsockopt(zmq.IMMEDIATE, 1)
    d.setsockopt(zmq.SNDHWM, cfg.send_hwm)
    # Never read: a peer that sends on it anyway cannot make it buffer much.
    d.setsockopt(zmq.RCVHWM, 1)
    d.setsockopt(zmq.MAXMSGSIZE, cfg.max_frame_bytes * 4 + 1024)
    d.setsockopt(zmq.RECONNECT_IVL, ms(cfg.reconnect_interval))
    d.setsockopt(zmq.RECONNECT_IVL_MAX, ms(cfg.reconnect_interval_max))
    # A SYN into a cut link would otherwise hang for minutes of TCP
    # retries; give up and let the reconnect loop try again.
    d.setsockopt(zmq.CONNECT_TIMEOUT, ms(cfg.peer_timeout))
    # A connection that died half-open (a cut cable, a crashed host) is closed
    # by the kernel: our heartbeats (every heartbeat interval) stay unacknowledged
    # and TCP_USER_TIMEOUT (ZMQ_TCP_MAXRT) = peer_timeout gives up on them, within
    # heartbeat_interval + peer_timeout of the cut, as fast as ZMTP pings every
    # heartbeat interval did (measured between two network namespaces: 1.71 s
    # against 1.64 s with peer_timeout 1.5 s), but without a wake-up per ping.
    # The ZMTP PINGs, now every zmtp_ping_interval (10 s; issue #17: they were every
    # heartbeat interval, then every peer_timeout, most of an idle node's bus traffic),
    # catch a peer whose kernel still acknowledges but whose process reads nothing
    # (stopped): within zmtp_ping_interval + peer_timeout.
    # SAFETY: the peer is reported down by the application heartbeats after
    # peer_timeout as before (bus.links); this only bounds how long frames may
    # still be queued onto a dead connection (the IMMEDIATE note above): they are
    # lost when it closes, or arrive late if the link heals first, which the bus
    # allows anyway (at most once, records are the truth: docs/PROTOCOL.md §8).
    # The PINGs' TTL, peer_timeout, exceeds the heartbeat interval: our
    # heartbeats follow each PING well within it.
    d.setsockopt(zmq.TCP_MAXRT, ms(cfg.peer_timeout))
    set_zmtp_heartbeats(d, cfg.zmtp_ping_interval, cfg.peer_timeout, cfg.peer_timeout)
    if keys is not None:
        # Pinning the server key means we only ever talk to the real
        # peer, even if someone else grabs its address.
        d.setsockopt(zmq.CURVE_SERVERKEY, keys.public_of(peer))
        d.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
        d.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
