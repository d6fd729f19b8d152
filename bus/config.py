"""The transport's tunables, shared by the I/O loop, the peer links and the link monitor."""

from __future__ import annotations

from dataclasses import dataclass

from bus.codec import DEFAULT_MAX_FRAME_BYTES
from bus.errors import ConfigError


@dataclass(frozen=True)
class TransportConfig:
    """Tunables. With the defaults a dead peer is reported 1.0-1.5 s after it died
    (its last heartbeat plus ``peer_timeout``). Heartbeats every 0.5 s (0.25 s before
    2026-12-02): at 10 nodes they were most of an idle node's bus traffic (issue #17);
    failover is bounded by the lease (``fence_delay + lease_ttl``), not by them."""

    heartbeat_interval: float = 0.5
    peer_timeout: float = 1.5
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    # Messages a peer's outgoing pipe may hold before sends to it are
    # dropped (and counted) instead of growing memory without bound.
    send_hwm: int = 10_000
    recv_hwm: int = 10_000
    reconnect_interval: float = 0.1
    reconnect_interval_max: float = 1.0
    expected_votes: int | None = None
    tie_breaker: bool = False
    # At most one log line per (peer, reason) per this many seconds.
    log_interval: float = 10.0
    # Frames handled per socket per loop turn, so one busy peer cannot starve
    # heartbeats or other sockets.
    batch: int = 512
    # Limits against floods (docs/PROTOCOL.md section 2 "Limits", bus.guard):
    # an inbound connection that has not finished its handshake after this
    # long is closed (ZMQ_HANDSHAKE_IVL); at most so many inbound connections
    # at once, in total and from one address; and so many file descriptors
    # kept free for the store and the watchdog.
    handshake_timeout: float = 3.0
    max_connections: int = 1024
    max_connections_per_source: int = 256
    fd_reserve: int = 128

    # How often libzmq pings on each connection (bus.sockets). ZMTP PINGs only close
    # connections whose peer process stopped reading while its kernel still acknowledges
    # (a cut link is closed by the kernel: TCP_USER_TIMEOUT on the unacknowledged
    # heartbeats), so they need not come as often as the heartbeats: each costs a PING
    # and a PONG, CURVE-encrypted, and wake-ups, per connection, and a node has two
    # connections per peer (issue #17: at 10 nodes every peer_timeout they were 48
    # messages/s per node, more than the heartbeats). Peer-down detection never uses them.
    zmtp_ping_interval: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_interval < self.peer_timeout:
            raise ConfigError("need 0 < heartbeat_interval < peer_timeout")
        if not self.zmtp_ping_interval >= self.peer_timeout:
            raise ConfigError("need zmtp_ping_interval >= peer_timeout")
        if self.handshake_timeout <= 0 or min(self.max_connections, self.max_connections_per_source) < 1:
            raise ConfigError("need handshake_timeout > 0 and connection limits >= 1")
        if self.expected_votes is not None and self.expected_votes < 1:
            raise ConfigError("expected_votes must be >= 1")
