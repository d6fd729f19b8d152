"""The ZeroMQ transport: one ROUTER in, one DEALER out per peer, one I/O thread.

Topology. Every node binds one ROUTER at its membership endpoint and keeps one
DEALER connected to each other member's ROUTER. A message from A to B travels
A.DEALER[B] -> B.ROUTER; replies to cluster members go the same way in the
other direction. Non-member clients (the CLI) connect a DEALER to a node's
ROUTER and get their replies back through that ROUTER.

Threads. ZeroMQ sockets are not thread-safe. One thread, the I/O thread,
owns and polls the ROUTER, the ZAP handler and the socket monitors. It also
creates, configures and in the end closes each DEALER; in between, a DEALER
is a send-only socket that is never polled or read, used by whichever thread
sends (the I/O thread too: heartbeats, sends from subscriber callbacks), but
only while holding that peer's lock. libzmq allows moving a socket between
threads given a full memory barrier, which the lock provides, so a send costs
the caller one encode and one zmq_send, with no hop to the I/O thread. This
deliberate exception to "one owner thread per socket" is spelled out in
docs/PROTOCOL.md ("Threading"). Frames the I/O thread must handle itself
(replies through the ROUTER, sends to this very node) go through a deque plus
a wake-up fd. (Measured with bench/bus.py: handing every frame to the I/O
thread through per-thread inproc PUSH sockets cost about half the throughput
of this.)

Delivery. Subscribers are plain callables ``deliver(envelope)``; they run on
the I/O thread and must not block (``actor_ref.tell`` is the intended use).
An exception in a callback is logged and counted, never fatal. Sending is
at-most-once: a frame to an unreachable peer is dropped and counted at once
(``IMMEDIATE``), never queued for a later, stale delivery. Reliability on top
lives in :mod:`bus.reliability`.

Membership and quorum. Every ``heartbeat_interval`` the node sends a
Heartbeat to each peer. A peer is up once its heartbeat arrived and our own
DEALER to it completed its handshake (both directions work), until nothing
has been heard from it for ``peer_timeout``; the node is quorate per
:func:`bus.quorum.quorum_view`. Changes are delivered to subscribers as
PeerUp/PeerDown/QuorumLost/QuorumRegained envelopes sent by the node itself.
"""

# size: one Transport owns the sockets and the I/O thread; its send, receive and liveness paths share
#   per-peer state and locks (docs/PROTOCOL.md "Threading"), and the hot paths are inlined on purpose
#   (bench/bus.py)

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

import zmq
from loguru import logger
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from bus.codec import DEFAULT_MAX_FRAME_BYTES, Codec, Envelope, RejectReason
from bus.errors import BusError, ConfigError, ProtocolError, UnknownPeerError
from bus.keys import CurveKeys
from bus.membership import Membership, PeerTracker
from bus.messages import (
    ApiRequest,
    Heartbeat,
    Message,
    PeerUp,
    QuorumLost,
    QuorumRegained,
)
from bus.quorum import QuorumView, quorum_view
from bus.ratelog import RateLimitedLog

Deliver = Callable[[Envelope], object]

_ZAP_ENDPOINT = "inproc://zeromq.zap.01"
# Targets of frames queued for the I/O thread (see Transport._post): our own
# name, or b"\x00" + a client's ROUTER routing id (no member name can start
# with a NUL byte, see bus.membership.check_name).
_T_CLIENT = 0x00
_NOBLOCK = zmq.NOBLOCK
# At most 2**_ASK_BACKOFF - 1 router turns in a row skip the ZMQ_EVENTS ask
# (see Transport._drain_router).
_ASK_BACKOFF = 4
# Kinds a non-member (authenticated client) may send.
_CLIENT_KINDS = frozenset({ApiRequest.KIND})
_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


@dataclass(frozen=True)
class TransportConfig:
    """Tunables. With the defaults a dead peer is reported 1.25-1.5 s after it died
    (its last heartbeat plus ``peer_timeout``)."""

    heartbeat_interval: float = 0.25
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

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_interval < self.peer_timeout:
            raise ConfigError("need 0 < heartbeat_interval < peer_timeout")
        if self.expected_votes is not None and self.expected_votes < 1:
            raise ConfigError("expected_votes must be >= 1")


class _Link:
    """Our DEALER to one peer: usable from any thread, but only under ``lock``."""

    __slots__ = ("closed", "counts", "lock", "name", "sent", "sock")

    def __init__(self, name: str, sock: zmq.Socket[bytes]) -> None:
        self.name = name
        self.sock = sock
        self.lock = threading.Lock()
        self.closed = False
        self.sent = 0  # the hot counter, a plain int; the rare ones in counts
        self.counts: dict[str, int] = {}


class Subscription:
    def __init__(self, transport: Transport, deliver: Deliver, kinds: frozenset[str] | None) -> None:
        self._transport, self.deliver, self.kinds = transport, deliver, kinds

    def cancel(self) -> None:
        self._transport._unsubscribe(self)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class Transport:
    """A node's endpoint on the bus. ``start()`` it, ``stop()`` it (or use ``with``)."""

    def __init__(
        self,
        node: str,
        membership: Membership,
        *,
        cluster: str,
        curve: bool = True,
        keys: CurveKeys | None = None,
        config: TransportConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if node not in membership:
            raise ConfigError(f"node {node!r} is not in the membership {membership.names}")
        self.node = node
        self.membership = membership
        self.config = config or TransportConfig()
        self.codec = Codec(cluster, self.config.max_frame_bytes)
        self._encode, self._decode = self.codec.encode, self.codec.decode
        self.curve = curve
        if curve:
            if keys is None:
                raise ConfigError("curve=True needs keys (bus.keys.CurveKeys.load) or pass curve=False")
            if keys.node != node:
                raise ConfigError(f"keys belong to {keys.node!r}, not {node!r}")
            for peer in membership.others(node):
                keys.public_of(peer.name)  # fail now, not at first connect
        self._keys = keys
        self._clock = clock
        self._wall_clock = wall_clock
        self.incarnation = time.time_ns()
        self._node_b = node.encode()
        self._peers = tuple(p.name for p in membership.others(node))
        self._members_b = frozenset(n.encode() for n in membership.names)
        self._members = frozenset(membership.names)
        self._tracker = PeerTracker(self._peers, self.config.peer_timeout)
        self._quorum = self._compute_quorum(frozenset())
        self._ids = itertools.count(1)
        self._hb_seq = itertools.count(1)
        self._rlog = RateLimitedLog(self.config.log_interval, clock)
        # Subscriptions are copy-on-write: the I/O thread reads the current
        # routes dict without locking; (un)subscribe swaps in a new one.
        self._subs: tuple[Subscription, ...] = ()
        self._routes: dict[str, tuple[Deliver, ...]] = {}
        self._routes_all: tuple[Deliver, ...] = ()
        self._sub_lock = threading.Lock()
        # Counters: the I/O thread writes _io_counts alone; sender threads
        # write _tx_counts (rare drop paths only) under _tx_lock. stats()
        # merges copies.
        self._io_counts: dict[str, int] = {}
        # The two per-frame I/O-thread counters, as plain ints (cheaper).
        self._received = 0
        self._delivered = 0
        self._tx_counts: dict[str, int] = {}
        self._tx_lock = threading.Lock()
        # Hand-over of outgoing frames from other threads: a deque (append and
        # popleft are atomic) plus a wake-up fd the I/O thread polls. The fd
        # is only written when the I/O thread said it is about to sleep, so
        # a busy bus moves frames with no syscall and no lock at all.
        self._outq: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self._io_idle = False
        self._waker: _Waker | None = None
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._thread: threading.Thread | None = None
        self._io_ident: int | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._running = False
        self._closed = False
        self._endpoint = membership.endpoint(node)
        # Set up by the I/O thread in _open():
        self._router: zmq.Socket[bytes]
        self._links: dict[bytes, _Link] = {}
        self._links_by_name: dict[str, _Link] = {}
        self._now = clock()  # the I/O thread's clock reading for the current batch
        # Quiet sockets (by ZMQ_FD) the I/O thread must look at before sleeping.
        self._quiet_due: set[int] = set()
        # Back-off of the "more waiting?" ask in _drain_router.
        self._ask_misses = 0
        self._ask_skip = 0

    # ------------------------------------------------------------------ API

    @property
    def endpoint(self) -> str:
        """The endpoint actually bound (resolves a ``:*`` port once started)."""
        return self._endpoint

    @property
    def quorum(self) -> QuorumView:
        return self._quorum

    @property
    def quorate(self) -> bool:
        return self._quorum.quorate

    def peers_up(self) -> frozenset[str]:
        return self._tracker.up()

    def stats(self) -> dict[str, int]:
        """Counters: sent, received, delivered, rejected.<reason>, dropped.<reason>, ..."""
        # dict.copy() is a single C call, atomic under the GIL, so this never
        # sees a dict that changes size under it.
        io = self._io_counts.copy()
        parts = [{"received": self._received, "delivered": self._delivered}]
        with self._tx_lock:
            parts.append(self._tx_counts.copy())
        for link in list(self._links_by_name.values()):
            with link.lock:
                parts.append({**link.counts, "sent": link.sent})
        for part in parts:
            for k, v in part.items():
                if v:
                    io[k] = io.get(k, 0) + v
        return io

    def rejected(self) -> dict[str, int]:
        return {k.split(".", 1)[1]: v for k, v in self.stats().items() if k.startswith("rejected.")}

    def subscribe(self, deliver: Deliver, kinds: Iterable[type[Message] | str] | None = None) -> Subscription:
        """Call ``deliver(envelope)`` on the I/O thread for each matching message.

        ``kinds=None`` means every kind, including heartbeats and local
        peer/quorum events. For one envelope, the subscribers of its kind run
        first (in subscription order), then the catch-all ones. Callbacks
        must be quick and must not block.
        """
        ks = None if kinds is None else frozenset(k if isinstance(k, str) else k.KIND for k in kinds)
        sub = Subscription(self, deliver, ks)
        with self._sub_lock:
            self._subs = (*self._subs, sub)
            self._rebuild_routes()
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._sub_lock:
            self._subs = tuple(s for s in self._subs if s is not sub)
            self._rebuild_routes()

    def _rebuild_routes(self) -> None:
        routes: dict[str, list[Deliver]] = {}
        everything: list[Deliver] = []
        for s in self._subs:
            if s.kinds is None:
                everything.append(s.deliver)
            else:
                for k in s.kinds:
                    routes.setdefault(k, []).append(s.deliver)
        # Callbacks keep subscription order; "all" subscribers come after kind ones.
        self._routes = {k: (*v, *everything) for k, v in routes.items()}
        self._routes_all = tuple(everything)

    def send(self, node: str, msg: Message) -> bool:
        r"""Send ``msg`` to member ``node``, at most once.

        Returns False if the frame was dropped before leaving this process
        (no connection to ``node``, transport stopped, backlog full); True
        means it was handed on, not that it arrived. Raises
        :class:`UnknownPeerError` for a non-member, :class:`ProtocolError`
        (``oversized``) for a message over the frame limit or (``bad_payload``)
        one that cannot be encoded, and :class:`BusError` before ``start()``:
        all of them are ``HaError``\ s.
        """
        link = self._links_by_name.get(node)
        if link is not None:  # the hot path: a started transport, a peer
            frame = self._encode(self.node, next(self._ids), msg)
            with link.lock:  # _send_link(link, frame), inlined: one call less per message
                if link.closed:
                    key = "dropped.closed"
                else:
                    try:
                        link.sock.send(frame, _NOBLOCK)
                    except zmq.Again:  # see _send_link
                        key = "dropped.unreachable"
                    else:
                        link.sent += 1
                        return True
                link.counts[key] = link.counts.get(key, 0) + 1
                return False
        node_b = node.encode()
        if node_b not in self._members_b:
            raise UnknownPeerError(node)
        # Ourselves, or not started yet (then _post raises).
        return self._post(node_b, self.codec.encode(self.node, next(self._ids), msg))

    def broadcast(self, msg: Message) -> bool:
        """Send ``msg`` to every other member (each copy at most once)."""
        frame = self.codec.encode(self.node, next(self._ids), msg)
        if self._waker is None and not self._closed:
            raise BusError("transport not started")
        ok = True
        for link in list(self._links_by_name.values()):
            ok = self._send_link(link, frame) and ok
        return ok

    def reply(self, env: Envelope, msg: Message) -> bool:
        """Answer ``env``: to its sender if a member, else back through the ROUTER to the client.

        A frame naming a member as sender got here only if its key belongs to that
        member (``_on_frame``), so a member is answered on its own link.
        """
        if env.sender.encode() in self._members_b:
            return self.send(env.sender, msg)
        frame = self.codec.encode(self.node, next(self._ids), msg)
        return self._post(bytes((_T_CLIENT,)) + env.origin, frame)

    def start(self, timeout: float = 10.0) -> Transport:
        if self._thread is not None:
            raise BusError("transport already started")
        self._ctx = zmq.Context()
        self._waker = _Waker()
        self._running = True
        self._thread = threading.Thread(target=self._run, name=f"bus-io-{self.node}")
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise BusError("I/O thread did not come up")
        if self._start_error is not None:
            err = self._start_error
            self.stop()
            if isinstance(err, zmq.ZMQError):
                raise BusError(f"cannot open {self._endpoint}: {err}") from err
            raise err
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the I/O thread, close every socket, terminate the context. Idempotent."""
        thread = self._thread
        self._closed = True
        if thread is not None and thread.is_alive():
            self._running = False
            if self._waker is not None:
                self._waker.wake()
            thread.join(timeout)
            if thread.is_alive():
                raise BusError(f"bus I/O thread of {self.node} did not stop within {timeout}s")
        if self._waker is not None:
            self._waker.close()
        self._outq.clear()
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def __enter__(self) -> Transport:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------- sender side

    def _tx_count(self, key: str) -> None:
        with self._tx_lock:
            self._tx_counts[key] = self._tx_counts.get(key, 0) + 1

    def _post(self, target: bytes, frame: bytes) -> bool:
        if threading.get_ident() == self._io_ident:
            return self._route(target, frame)
        if self._closed:
            self._tx_count("dropped.closed")
            return False
        waker = self._waker
        if waker is None:
            raise BusError("transport not started")
        limit = self.config.send_hwm
        if limit and len(self._outq) >= limit:
            # The I/O thread is send_hwm frames behind: shed load here rather
            # than block an actor thread or grow without bound.
            self._tx_count("dropped.backlog")
            return False
        self._outq.append((target, frame))
        # Ordering matters: append, then read the flag. The I/O thread sets
        # the flag, then re-checks the queue before sleeping, so one of the
        # two always sees the other and no frame waits for a timer.
        if self._io_idle:
            self._io_idle = False
            waker.wake()
        return True

    # ----------------------------------------------------- I/O thread

    def _count(self, key: str, n: int = 1) -> None:
        self._io_counts[key] = self._io_counts.get(key, 0) + n

    def _open(self) -> None:
        assert self._ctx is not None
        ctx, cfg = self._ctx, self.config
        if self.curve:
            assert self._keys is not None
            # SAFETY: the ZAP handler must be bound before the ROUTER accepts
            # connections; libzmq lets every CURVE client in when no handler
            # exists. ZAP_ENFORCE_DOMAIN closes that hole as a second line.
            self._zap = ctx.socket(zmq.REP)
            self._zap.setsockopt(zmq.LINGER, 0)
            self._zap.bind(_ZAP_ENDPOINT)
            self._key_names = {key: name for name, key in self._keys.authorized.items()}
        # Every socket is recorded as soon as it exists, so that _close_all()
        # can close it if a later step (say, bind) fails; an unclosed socket
        # would make Context.term() hang forever.
        self._monitors: dict[zmq.Socket[bytes], tuple[zmq.Socket[bytes], str]] = {}
        r = self._router = ctx.socket(zmq.ROUTER)
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
        self._set_heartbeats(r)
        if self.curve:
            assert self._keys is not None
            r.setsockopt(zmq.CURVE_SERVER, 1)
            r.setsockopt(zmq.CURVE_SECRETKEY, self._keys.secret)
            r.setsockopt(zmq.CURVE_PUBLICKEY, self._keys.public)
            r.setsockopt(zmq.ZAP_DOMAIN, self.codec.cluster.encode())
            r.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        self._monitors[r.get_monitor_socket(_HANDSHAKE_FAILED)] = (r, "")
        r.bind(self._endpoint)
        self._endpoint = r.getsockopt_string(zmq.LAST_ENDPOINT)
        for peer in self.membership.others(self.node):
            d = ctx.socket(zmq.DEALER)
            link = self._links[peer.name.encode()] = _Link(peer.name, d)  # registered for cleanup
            d.setsockopt(zmq.LINGER, 0)
            # SAFETY (honest reachability): only queue onto a completed
            # connection. Without IMMEDIATE, frames for a down peer pile up
            # and arrive, stale, whenever it comes back.
            d.setsockopt(zmq.IMMEDIATE, 1)
            d.setsockopt(zmq.SNDHWM, cfg.send_hwm)
            d.setsockopt(zmq.RECONNECT_IVL, _ms(cfg.reconnect_interval))
            d.setsockopt(zmq.RECONNECT_IVL_MAX, _ms(cfg.reconnect_interval_max))
            # A SYN into a cut link would otherwise hang for minutes of TCP
            # retries; give up and let the reconnect loop try again.
            d.setsockopt(zmq.CONNECT_TIMEOUT, _ms(cfg.peer_timeout))
            self._set_heartbeats(d)
            if self.curve:
                assert self._keys is not None
                # Pinning the server key means we only ever talk to the real
                # peer, even if someone else grabs its address.
                d.setsockopt(zmq.CURVE_SERVERKEY, self._keys.public_of(peer.name))
                d.setsockopt(zmq.CURVE_PUBLICKEY, self._keys.public)
                d.setsockopt(zmq.CURVE_SECRETKEY, self._keys.secret)
            link_events = _HANDSHAKE_FAILED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
            self._monitors[d.get_monitor_socket(link_events)] = (d, peer.name)
            d.connect(peer.endpoint)
            # Only a fully configured socket becomes visible to sender threads,
            # and releasing the lock after all of the above is the memory
            # barrier that hands it over (a sender's first use takes the lock).
            with link.lock:
                self._links_by_name[peer.name] = link
        self._poller = zmq.Poller()
        self._poller.register(r, zmq.POLLIN)
        assert self._waker is not None
        self._poller.register(self._waker.fd, zmq.POLLIN)
        # The quiet sockets (ZAP, monitors) are polled through their ZMQ_FD,
        # a plain fd: zmq_poll then costs a poll() slot for each instead of a
        # ZMQ_EVENTS round per socket per loop turn, which was about a third
        # of a turn with two peers (and grows with the membership). See
        # _service() for the edge-triggered contract that comes with it.
        self._quiet: dict[int, tuple[zmq.Socket[bytes], Callable[[zmq.Socket[bytes]], None]]] = {}
        if self.curve:
            self._quiet[cast(int, self._zap.getsockopt(zmq.FD))] = (self._zap, self._handle_zap)
        for m in self._monitors:
            self._quiet[cast(int, m.getsockopt(zmq.FD))] = (m, self._handle_monitor)
        for fd in self._quiet:
            self._poller.register(fd, zmq.POLLIN)

    def _set_heartbeats(self, s: zmq.Socket[bytes]) -> None:
        # ZMTP-level heartbeats let libzmq notice a dead TCP connection (e.g.
        # after a partition) and reconnect, instead of trusting a half-open
        # socket until TCP gives up many minutes later.
        s.setsockopt(zmq.HEARTBEAT_IVL, _ms(self.config.heartbeat_interval))
        s.setsockopt(zmq.HEARTBEAT_TIMEOUT, _ms(self.config.peer_timeout))
        s.setsockopt(zmq.HEARTBEAT_TTL, _ms(self.config.peer_timeout))

    def _close_all(self) -> None:
        # Take the DEALERs back from the sender threads first: once `closed`
        # is set under its lock, no sender touches a DEALER again (they check
        # it under the same lock), and taking the lock is the memory barrier
        # after their last send. Only then may this thread disable a DEALER's
        # monitor and close it.
        for link in self._links.values():
            with link.lock:
                link.closed = True
        monitors = getattr(self, "_monitors", {})
        for sock in [*monitors]:
            sock.close(linger=0)
        for owner, _ in monitors.values():
            with contextlib.suppress(zmq.ZMQError):
                owner.disable_monitor()
        for name in ("_router", "_zap"):
            owned: zmq.Socket[bytes] | None = getattr(self, name, None)
            if owned is not None:
                owned.close(linger=0)
        for link in self._links.values():
            link.sock.close(linger=0)

    def _run(self) -> None:
        self._io_ident = threading.get_ident()
        try:
            self._open()
        except BaseException as exc:  # reported to start(), which re-raises
            self._start_error = exc
            self._close_all()
            self._ready.set()
            return
        self._ready.set()
        logger.info(
            "bus {} up at {} (curve={}, peers={})", self.node, self._endpoint, self.curve, list(self._peers)
        )
        try:
            self._loop()
        finally:
            self._close_all()
            logger.info("bus {} stopped", self.node)

    def _loop(self) -> None:
        cfg = self.config
        next_hb = self._clock()
        # No peer can expire before this (see below), so the tracker is only
        # asked when it is due rather than on every loop turn.
        next_check = next_hb
        self._update_quorum()  # a 1-node cluster is quorate from the start
        assert self._waker is not None
        waker_fd, router, outq, quiet = self._waker.fd, self._router, self._outq, self._quiet
        # Whatever the quiet sockets got while they were being set up has
        # already consumed its fd signal: look at each of them once.
        self._quiet_due.update(quiet)
        while self._running:
            now = self._clock()
            if now >= next_hb:
                self._send_heartbeats()
                next_hb = now + cfg.heartbeat_interval
            if now >= next_check:
                self._expire(now)
                # A peer expires at its last_heard + peer_timeout; last_heard
                # only grows, and a peer that starts being tracked later gets
                # a later expiry than now + peer_timeout. So this is never
                # late; at worst a turn wakes early and finds nothing to do.
                expiry = self._tracker.next_expiry()
                next_check = expiry if expiry is not None else now + cfg.peer_timeout
            wake_at = next_hb if next_hb < next_check else next_check
            timeout_ms = max(0, int((wake_at - self._clock()) * 1000) + 1)
            self._io_idle = True
            if outq or self._quiet_due:  # work slipped in after the last turn: don't sleep
                timeout_ms = 0
            try:
                ready = self._poller.poll(timeout_ms)
                self._io_idle = False
                for sock, _ in ready:
                    if sock is router:
                        self._drain_router()
                    elif sock == waker_fd:
                        self._waker.clear()
                    else:
                        self._quiet_due.add(sock)
                if self._quiet_due:
                    due, self._quiet_due = self._quiet_due, set()
                    for fd in due:
                        self._service(fd, quiet)
                if outq:
                    self._drain_outq()
            except Exception as exc:  # the I/O thread must survive anything
                self._io_idle = False
                # Whatever was interrupted is looked at again next turn: an
                # edge-triggered fd would not signal it a second time.
                self._quiet_due.update(quiet)
                self._count("io_error")
                if self._rlog.allow(("io", type(exc).__name__)) is not None:
                    logger.opt(exception=exc).error("bus {}: unexpected I/O error", self.node)

    def _service(
        self,
        fd: int,
        quiet: dict[int, tuple[zmq.Socket[bytes], Callable[[zmq.Socket[bytes]], None]]],
    ) -> None:
        """Handle what a quiet socket (ZAP, a monitor) holds, polled by its ZMQ_FD.

        That fd is edge-triggered: it signals once when the socket's state
        may have changed, and ZMQ_EVENTS (which also clears it) tells what is
        there. It will signal again only after the socket was seen empty, so
        this reads until ZMQ_EVENTS says there is nothing left; a socket cut
        short (the batch bound, an exception) stays due for the next turn.
        """
        sock, handle = quiet[fd]
        for _ in range(self.config.batch):
            if not cast(int, sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                return
            handle(sock)
        self._quiet_due.add(fd)

    # -- outbound

    def _route(self, target: bytes, frame: bytes) -> bool:
        if target[0] == _T_CLIENT:
            try:
                self._router.send_multipart((target[1:], frame), zmq.NOBLOCK)
            except zmq.ZMQError:
                self._count("dropped.unroutable")
                return False
            self._count("sent")
            return True
        if target == self._node_b:
            self._on_frame(self._node_b, frame, None, local=True)
            return True
        self._count("dropped.unknown_peer")
        return False

    def _send_link(self, link: _Link, frame: bytes) -> bool:
        with link.lock:
            if link.closed:
                key = "dropped.closed"
            else:
                try:
                    link.sock.send(frame, _NOBLOCK)
                except zmq.Again:
                    # With IMMEDIATE, Again means "no completed connection" or
                    # "send_hwm frames already queued for a peer that does not
                    # read": either way the peer cannot take it now. (Telling
                    # the two apart from the link state would race with the
                    # monitor events, so they share one counter.)
                    key = "dropped.unreachable"
                else:
                    link.sent += 1
                    return True
            link.counts[key] = link.counts.get(key, 0) + 1
            return False

    def _drain_outq(self) -> None:
        popleft, route = self._outq.popleft, self._route
        # Bounded, so a flood of local sends cannot starve inbound traffic
        # and timers; whatever is left makes the next poll non-blocking.
        for _ in range(self.config.batch):
            try:
                target, frame = popleft()
            except IndexError:
                return
            route(target, frame)

    def _send_heartbeats(self) -> None:
        hb = Heartbeat(self.node, self.incarnation, next(self._hb_seq), self._wall_clock())
        frame = self.codec.encode(self.node, next(self._ids), hb)
        for link in self._links.values():
            with link.lock:
                try:
                    link.sock.send(frame, zmq.NOBLOCK)
                except zmq.Again:
                    # Expected while a peer is down; not a loss anyone waits for.
                    self._count("heartbeat_unsent")

    # -- inbound

    def _drain_router(self) -> None:
        r, on_frame = self._router, self._on_frame
        self._now = self._clock()  # one clock read per batch is plenty for liveness
        for n in range(self.config.batch):
            # Before the second read of a batch, ask rather than try: a failed
            # non-blocking recv costs several times a ZMQ_EVENTS query. Once a
            # burst shows up, read blindly until it is drained. In
            # request/response traffic the answer is "nothing" turn after
            # turn, and everything this thread does before it sleeps again
            # delays the frame it just sent (libzmq's I/O thread shares the
            # CPU with it), so after each such answer the next 1, 3, 7, then
            # 15 turns do not ask and go straight back to zmq_poll, which is
            # level-triggered: nothing left waiting is ever missed, a burst
            # only costs a few extra turns until the next ask finds it.
            if n == 1:
                if self._ask_skip:
                    self._ask_skip -= 1
                    return
                if not cast(int, r.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                    misses = self._ask_misses = min(self._ask_misses + 1, _ASK_BACKOFF)
                    self._ask_skip = (1 << misses) - 1
                    return
                self._ask_misses = 0
            # A ROUTER always yields [routing id, frame, ...]; a DEALER cannot
            # send an empty message, so the second recv never blocks.
            try:
                origin = r.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            # As a Frame, the body tells us for free (.more) whether more parts
            # follow; a RCVMORE query would cost about as much as the recv.
            part = r.recv(copy=False)
            data = part.bytes
            # User-Id is what the ZAP handler vouched for: the key owner.
            user = part.get("User-Id") if self.curve else None
            if part.more:
                extra = 0
                while r.getsockopt(zmq.RCVMORE):
                    r.recv()
                    extra += 1
                self._reject(origin, RejectReason.BAD_FRAMING, f"{2 + extra} frames")
                continue
            on_frame(origin, data, user if isinstance(user, str) else None)

    def _reject(self, origin: bytes, reason: str, detail: str) -> None:
        self._count("rejected." + reason)
        peer = origin.decode("utf-8", "replace")[:64] or "?"
        self._rlog.warning(
            (peer, reason), "bus {}: rejected frame from {!r}: {} ({})", self.node, peer, reason, detail
        )

    def _on_frame(self, origin: bytes, data: bytes, user: str | None, *, local: bool = False) -> None:
        # The one entry point per inbound frame (actors/api.py wraps it).
        try:
            env = self._decode(data, origin)
        except ProtocolError as exc:
            self._reject(origin, exc.reason, exc.detail)
            return
        if not local:
            sender = env.sender
            if sender in self._members:
                # With CURVE a member is who the ZAP handler says owns the key
                # (routing ids prove nothing: the ROUTER numbers connections
                # itself). A frame claiming our own name can only be forged.
                # Without CURVE (tests only) nothing is authenticated.
                if sender == self.node or (self.curve and user != sender):
                    self._reject(origin, RejectReason.SPOOFED_SENDER, f"claims {sender!r}")
                    return
            elif env.kind not in _CLIENT_KINDS:
                self._reject(origin, RejectReason.NOT_A_MEMBER, f"{sender!r} sent {env.kind}")
                return
            body = env.body
            if type(body) is Heartbeat:
                if body.node != sender:
                    self._reject(origin, RejectReason.SPOOFED_SENDER, "heartbeat for another node")
                    return
                up = self._tracker.heartbeat(sender, body.incarnation, self._now)
                if up is not None:
                    self._peer_up(up)
            else:
                self._tracker.traffic(sender, self._now)
        self._received += 1
        # _dispatch(env), inlined: one call less per received frame.
        delivered = 0
        for deliver in self._routes.get(env.kind, self._routes_all):
            try:
                deliver(env)
            except Exception as exc:  # a subscriber bug must not kill the bus
                self._handler_failed(env, exc)
            else:
                delivered += 1
        self._delivered += delivered

    def _dispatch(self, env: Envelope) -> None:
        delivered = 0
        for deliver in self._routes.get(env.kind, self._routes_all):
            try:
                deliver(env)
            except Exception as exc:  # a subscriber bug must not kill the bus
                self._handler_failed(env, exc)
            else:
                delivered += 1
        self._delivered += delivered

    def _handler_failed(self, env: Envelope, exc: Exception) -> None:
        self._count("handler_error")
        if self._rlog.allow(("handler", env.kind)) is not None:
            logger.opt(exception=exc).error("bus {}: subscriber failed on {}", self.node, env.kind)

    def _peer_up(self, up: PeerUp) -> None:
        logger.info("bus {}: peer {} up (incarnation {})", self.node, up.node, up.incarnation)
        self._emit(up)
        self._update_quorum()

    def _emit(self, msg: Message) -> None:
        self._dispatch(Envelope(1, self.codec.cluster, self.node, msg.KIND, next(self._ids), msg))

    def _expire(self, now: float) -> None:
        downs = self._tracker.expire(now)
        for down in downs:
            logger.warning(
                "bus {}: peer {} down (silent for {:.2f}s)", self.node, down.node, self.config.peer_timeout
            )
            self._emit(down)
        if downs:
            self._update_quorum()

    def _compute_quorum(self, up: frozenset[str]) -> QuorumView:
        return quorum_view(
            self.membership.names,
            up | {self.node},
            expected_votes=self.config.expected_votes,
            tie_breaker=self.config.tie_breaker,
        )

    def _update_quorum(self) -> None:
        old, new = self._quorum, self._compute_quorum(self._tracker.up())
        self._quorum = new
        # The very first evaluation reports a quorate start as "regained".
        first = not getattr(self, "_quorum_announced", False)
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

    # -- authentication

    def _handle_zap(self, zap: zmq.Socket[bytes]) -> None:
        req = zap.recv_multipart()
        reply_id = req[1] if len(req) > 1 else b""
        status, text, user = b"500", b"internal error", b""
        try:
            status, text, user = self._authenticate(req)
        finally:
            # A REP socket that skips a reply is wedged for good, and every
            # later handshake would hang: always answer, even after a bug.
            zap.send_multipart([b"1.0", reply_id, status, text, user, b""])

    def _authenticate(self, req: list[bytes]) -> tuple[bytes, bytes, bytes]:
        if len(req) < 6 or req[0] != b"1.0":
            return b"500", b"bad ZAP request", b""
        address = req[3].decode("ascii", "replace")
        if req[5] != b"CURVE" or len(req) != 7 or len(req[6]) != 32:
            self._count("auth_denied")
            self._rlog.warning(
                ("zap", address),
                "bus {}: refused {} (mechanism {})",
                self.node,
                address,
                req[5].decode("ascii", "replace"),
            )
            return b"400", b"CURVE required", b""
        key = z85.encode(req[6])
        name = self._key_names.get(key)
        if name is None:
            self._count("auth_denied")
            self._rlog.warning(
                ("zap", address),
                "bus {}: refused {}: unknown CURVE key {}",
                self.node,
                address,
                key.decode("ascii"),
            )
            return b"400", b"unknown key", b""
        return b"200", b"OK", name.encode()

    def _handle_monitor(self, mon: zmq.Socket[bytes]) -> None:
        event = recv_monitor_message(mon)
        _, peer = self._monitors[mon]
        kind = event["event"]
        if peer and kind in (zmq.EVENT_HANDSHAKE_SUCCEEDED, zmq.EVENT_DISCONNECTED):
            connected = kind == zmq.EVENT_HANDSHAKE_SUCCEEDED
            logger.debug("bus {}: link to {} {}", self.node, peer, "up" if connected else "down")
            if connected:
                # libzmq queued the new connection's pipe for the DEALER (a
                # "bind" command) before it emitted this event, but the DEALER
                # takes it in only when it processes its commands, which send()
                # does at most once per ~1 ms. A send soon after the previous one
                # (say, a re-send on the PeerUp below, right after a heartbeat)
                # would then find no pipe and be dropped (issue #10). ZMQ_EVENTS
                # processes the commands unthrottled: from here on the link is
                # usable, as PeerUp promises.
                link = self._links[peer.encode()]
                with link.lock:
                    if not link.closed:
                        link.sock.getsockopt(zmq.EVENTS)
            up = self._tracker.link(peer, connected, self._clock())
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


class _Waker:
    """A pollable fd other threads poke to wake the I/O thread.

    Writes are plain syscalls, safe from any thread; ``close`` happens only
    after the I/O thread is gone and every later ``wake`` is a no-op.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        if hasattr(os, "eventfd"):
            self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._wfd = self.fd
        else:  # pragma: no cover - non-Linux fallback
            self.fd, self._wfd = os.pipe()
            os.set_blocking(self.fd, False)
            os.set_blocking(self._wfd, False)

    def wake(self) -> None:
        # The lock only guards against writing into a closed (and possibly
        # re-used) fd number during stop(); it is uncontended in practice.
        with self._lock:
            if not self._closed:
                # BlockingIOError: already signalled, the I/O thread wakes anyway.
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wfd, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 4096)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self.fd)
                if self._wfd != self.fd:
                    os.close(self._wfd)
