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


def set_zmtp_heartbeats(s: zmq.Socket[bytes], cfg: TransportConfig) -> None:
    # ZMTP-level heartbeats let libzmq notice a dead TCP connection (e.g.
    # after a partition) and reconnect, instead of trusting a half-open
    # socket until TCP gives up many minutes later.
    s.setsockopt(zmq.HEARTBEAT_IVL, ms(cfg.heartbeat_interval))
    s.setsockopt(zmq.HEARTBEAT_TIMEOUT, ms(cfg.peer_timeout))
    s.setsockopt(zmq.HEARTBEAT_TTL, ms(cfg.peer_timeout))


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
    set_zmtp_heartbeats(r, cfg)
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
    set_zmtp_heartbeats(d, cfg)
    if keys is not None:
        # Pinning the server key means we only ever talk to the real
        # peer, even if someone else grabs its address.
        d.setsockopt(zmq.CURVE_SERVERKEY, keys.public_of(peer))
        d.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
        d.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
