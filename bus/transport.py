"""The ZeroMQ transport: its public API and the I/O thread that runs it.

Topology. Every node binds one ROUTER at its membership endpoint and keeps one
DEALER connected to each other member's ROUTER. A message from A to B travels
A.DEALER[B] -> B.ROUTER; replies to cluster members go the same way in the
other direction. Non-member clients (the CLI) connect a DEALER to a node's
ROUTER and get their replies back through that ROUTER.

Threads. ZeroMQ sockets are not thread-safe. One thread, the I/O thread,
owns and polls the ROUTER, the ZAP handler and the socket monitors. It also
creates, configures and in the end closes each DEALER; in between, a DEALER
is used by whichever thread sends, under that peer's lock (:mod:`bus.peers`,
docs/PROTOCOL.md section 12). Frames the I/O thread must send itself go
through :mod:`bus.handover`.

Around this module, one idea each: :mod:`bus.peers` (a peer's DEALER and its
lock), :mod:`bus.links` (heartbeats, PeerUp/PeerDown, quorum), :mod:`bus.zap`
(who a CURVE key belongs to), :mod:`bus.sockets` (every socket option),
:mod:`bus.subscriptions` (who gets which envelope), :mod:`bus.handover`,
:mod:`bus.config`. Subscriber callbacks run on the I/O thread and must not
block; an exception in one is logged and counted, never fatal. Sending is
at-most-once; reliability on top lives in :mod:`bus.reliability`.
"""

# size: the transport's API and its I/O thread share one socket set and its state; the per-peer,
#   liveness, ZAP and socket-option parts already live in their own modules

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable
from typing import cast

import zmq
from loguru import logger

from bus.codec import Codec, Envelope, RejectReason
from bus.config import TransportConfig
from bus.errors import BusError, ConfigError, ProtocolError, UnknownPeerError
from bus.guard import InboundGuard
from bus.handover import Handover
from bus.keys import CurveKeys, KeyRing
from bus.links import HANDSHAKE_FAILED, LINK_EVENTS, LinkMonitor
from bus.membership import Membership, PeerSpec, one_member_change
from bus.messages import ApiRequest, Heartbeat, Message
from bus.peers import PeerLink
from bus.quorum import QuorumView
from bus.ratelog import RateLimitedLog
from bus.sockets import configure_dealer, configure_router
from bus.subscriptions import Deliver, Routes, Subscribers, Subscription
from bus.zap import ZapHandler

__all__ = ["Deliver", "Subscription", "Transport", "TransportConfig"]

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
        # The keys accepted now; frames of a connection whose key left it are dropped.
        self._ring = KeyRing.of(keys, membership.names) if curve and keys is not None else None
        self._clock = clock
        self._wall_clock = wall_clock
        self.incarnation = time.time_ns()
        self._node_b = node.encode()
        self._peers = tuple(p.name for p in membership.others(node))
        self._members_b = frozenset(n.encode() for n in membership.names)
        self._members = frozenset(membership.names)
        self._ids = itertools.count(1)
        self._rlog = RateLimitedLog(self.config.log_interval, clock)
        # The I/O thread reads the current routes without locking (bus.subscriptions).
        self._routes: Routes = {}
        self._routes_all: tuple[Deliver, ...] = ()
        self._subscribers = Subscribers(self._set_routes)
        # Counters: the I/O thread writes _io_counts alone; sender threads write
        # _tx_counts (rare drop paths) under _tx_lock. stats() merges copies.
        self._io_counts: dict[str, int] = {}
        # The two per-frame I/O-thread counters, as plain ints (cheaper).
        self._received = 0
        self._delivered = 0
        self._tx_counts: dict[str, int] = {}
        self._tx_lock = threading.Lock()
        # Frames other threads hand to the I/O thread (bus.handover).
        self._handover = Handover(self.config.send_hwm)
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._thread: threading.Thread | None = None
        self._io_ident: int | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._running = False
        self._endpoint = membership.endpoint(node)
        # A membership change waiting for the I/O thread (set_membership).
        self._pending: tuple[Membership, CurveKeys | None] | None = None
        # Set up by the I/O thread in _open():
        self._router: zmq.Socket[bytes]
        self._zap: zmq.Socket[bytes] | None = None
        self._links: dict[bytes, PeerLink] = {}
        self._links_by_name: dict[str, PeerLink] = {}
        self._now = clock()  # the I/O thread's clock reading for the current batch
        # Quiet sockets (by ZMQ_FD) the I/O thread must look at before sleeping.
        self._quiet_due: set[int] = set()
        # Back-off of the "more waiting?" ask in _drain_router.
        self._ask_misses = 0
        self._ask_skip = 0
        # Heartbeats, PeerUp/PeerDown and quorum (I/O thread; see bus.links).
        self._liveness = LinkMonitor(
            node,
            membership,
            self.config,
            self.incarnation,
            frame=lambda msg: self.codec.encode(self.node, next(self._ids), msg),
            emit=self._emit,
            count=self._count,
            rlog=self._rlog,
            clock=clock,
            wall_clock=wall_clock,
        )
        # Two per-frame liveness calls, bound once (the _on_frame hot path).
        self._heard = self._liveness.heartbeat
        self._traffic = self._liveness.tracker.traffic

    # ------------------------------------------------------------------ API

    @property
    def endpoint(self) -> str:
        """The endpoint actually bound (resolves a ``:*`` port once started)."""
        return self._endpoint

    @property
    def quorum(self) -> QuorumView:
        return self._liveness.quorum

    @property
    def quorate(self) -> bool:
        return self._liveness.quorum.quorate

    def peers_up(self) -> frozenset[str]:
        return self._liveness.up()

    def stats(self) -> dict[str, int]:
        """Counters: sent, received, delivered, rejected.<reason>, dropped.<reason>, ..."""
        # dict.copy() is one C call, atomic under the GIL: never a dict changing size under it.
        io = self._io_counts.copy()
        parts = [{"received": self._received, "delivered": self._delivered}]
        with self._tx_lock:
            parts.append(self._tx_counts.copy())
        for link in list(self._links_by_name.values()):
            parts.append(link.counters())
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
        return self._subscribers.add(deliver, kinds)

    def _set_routes(self, routes: Routes, everything: tuple[Deliver, ...]) -> None:
        self._routes, self._routes_all = routes, everything

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
            with link.lock:  # link.send(frame), inlined: one call less per message
                if link.closed:
                    key = "dropped.closed"
                else:
                    try:
                        link.sock.send(frame, _NOBLOCK)
                    except zmq.Again:  # see PeerLink.send
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
        if self._handover.waker is None and not self._handover.closed:
            raise BusError("transport not started")
        ok = True
        for link in list(self._links_by_name.values()):
            ok = link.send(frame) and ok
        return ok

    def set_membership(self, membership: Membership, keys: CurveKeys | None = None) -> None:
        """Change the members of a running transport: one member added or removed.

        ``keys`` (with CURVE) must hold every new member's public key. The I/O
        thread applies the change within a heartbeat interval: it connects to a new
        member, closes its link to one that left, and from then on counts votes by
        the new list (SAFETY: :func:`bus.membership.one_member_change`).
        """
        if self.node not in membership:
            raise ConfigError(f"node {self.node!r} is not in the membership {membership.names}")
        if self._pending is not None:
            # SAFETY: one change at a time against the list the I/O thread counts votes by; a
            # second one checked against a change not yet applied could replace it and jump two
            # members at once (review finding). The caller retries after the next heartbeat.
            raise BusError("the previous membership change is not applied yet")
        base = self.membership
        one_member_change(base.names, membership.names)
        for p in membership.others(self.node):
            if p.name in base and base.endpoint(p.name) != p.endpoint:
                raise ConfigError(f"the endpoint of member {p.name} cannot change while it is a member")
        if self.curve:
            if keys is None or keys.node != self.node:
                raise ConfigError("curve=True needs this node's keys with the new members' public keys")
            for peer in membership.others(self.node):
                keys.public_of(peer.name)
        if self._thread is None:
            raise BusError("transport not started")
        self._pending = (membership, keys)

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
        self._handover.open()
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
        handover = self._handover
        handover.closed = True
        if thread is not None and thread.is_alive():
            self._running = False
            if handover.waker is not None:
                handover.waker.wake()
            thread.join(timeout)
            if thread.is_alive():
                raise BusError(f"bus I/O thread of {self.node} did not stop within {timeout}s")
        handover.close()
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
        dropped = self._handover.post(target, frame)  # raises BusError before start()
        if dropped is not None:
            self._tx_count(dropped)
            return False
        return True

    # ----------------------------------------------------- I/O thread

    def _count(self, key: str, n: int = 1) -> None:
        self._io_counts[key] = self._io_counts.get(key, 0) + n

    def _open(self) -> None:
        assert self._ctx is not None
        ctx, cfg = self._ctx, self.config
        # Every socket is recorded as soon as it exists, so that _close_all()
        # can close it if a later step (say, bind) fails; an unclosed socket
        # would make Context.term() hang forever.
        zap_handler: ZapHandler | None = None
        if self.curve:
            assert self._keys is not None
            # SAFETY: the ZAP handler is bound before the ROUTER exists
            # (bus.sockets.configure_router).
            assert self._ring is not None
            zap_handler = ZapHandler(self.node, self._ring, self._count, self._rlog)
            self._zap = zap_handler.open(ctx)
        r = self._router = ctx.socket(zmq.ROUTER)
        configure_router(r, cfg, self._keys if self.curve else None, self.codec.cluster)
        self.guard = InboundGuard.of(self.node, cfg, self._count, self._rlog)
        self._liveness.watch(r, HANDSHAKE_FAILED, guard=self.guard)
        r.bind(self._endpoint)
        self._endpoint = self.guard.bound(r.getsockopt_string(zmq.LAST_ENDPOINT))
        for peer in self.membership.others(self.node):
            self._open_link(peer)
        self._poller = zmq.Poller()
        self._poller.register(r, zmq.POLLIN)
        assert self._handover.waker is not None
        self._poller.register(self._handover.waker.fd, zmq.POLLIN)
        # The quiet sockets (ZAP, monitors) are polled through their ZMQ_FD: a
        # poll() slot each instead of a ZMQ_EVENTS round per socket per turn
        # (a third of a turn with two peers). See _service() for the contract.
        self._quiet: dict[int, tuple[zmq.Socket[bytes], Callable[[zmq.Socket[bytes]], None]]] = {}
        if zap_handler is not None:
            assert self._zap is not None
            self._quiet[cast(int, self._zap.getsockopt(zmq.FD))] = (self._zap, zap_handler.handle)
        for m in self._liveness.monitor_sockets():
            self._quiet[cast(int, m.getsockopt(zmq.FD))] = (m, self._liveness.handle_event)
        for fd in self._quiet:
            self._poller.register(fd, zmq.POLLIN)

    def _open_link(self, peer: PeerSpec) -> zmq.Socket[bytes]:
        """Our DEALER to ``peer``, connected and visible to senders; returns its monitor socket."""
        assert self._ctx is not None
        link = PeerLink(peer.name, self._ctx.socket(zmq.DEALER))
        self._links[peer.name.encode()] = link  # registered for cleanup
        configure_dealer(link.sock, peer.name, self.config, self._keys if self.curve else None)
        mon = self._liveness.watch(link.sock, LINK_EVENTS, link)
        link.sock.connect(peer.endpoint)
        # Only a fully configured socket becomes visible to sender threads,
        # and releasing the lock after all of the above is the memory
        # barrier that hands it over (a sender's first use takes the lock).
        with link.lock:
            self._links_by_name[peer.name] = link
        return mon

    def _apply_membership(self) -> None:
        """I/O thread: apply what :meth:`set_membership` left (one member more or fewer)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        membership, keys = pending
        old = self.membership
        if keys is not None:
            self._keys = keys
            if self._ring is not None:
                self._ring.pin({n: keys.authorized[n] for n in membership.names if n in keys.authorized})
        for name in [n for n in old.names if n not in membership and n != self.node]:
            link = self._links_by_name.pop(name)
            del self._links[name.encode()]
            link.take_back()  # no sender thread touches the DEALER from here on
            mon = self._liveness.unwatch(link.sock)
            if mon is not None:
                fd = cast(int, mon.getsockopt(zmq.FD))
                self._poller.unregister(fd)
                self._quiet.pop(fd, None)
                self._quiet_due.discard(fd)
                mon.close(linger=0)
            link.sock.close(linger=0)
        self.membership = membership
        self._peers = tuple(p.name for p in membership.others(self.node))
        self._members_b = frozenset(n.encode() for n in membership.names)
        self._members = frozenset(membership.names)
        for peer in membership.others(self.node):
            if peer.name not in old:
                mon = self._open_link(peer)
                fd = cast(int, mon.getsockopt(zmq.FD))
                self._quiet[fd] = (mon, self._liveness.handle_event)
                self._poller.register(fd, zmq.POLLIN)
                self._quiet_due.add(fd)
        self._liveness.set_membership(membership)
        q = self._liveness.quorum
        logger.info(
            "bus {}: members now {} ({}/{} votes, {} needed)",
            self.node, ",".join(membership.names), q.votes, q.expected, q.needed,
        )  # fmt: skip

    def _close_all(self) -> None:
        # Take the DEALERs back from the sender threads first (PeerLink.take_back);
        # only then may this thread disable a DEALER's monitor and close it.
        for link in self._links.values():
            link.take_back()
        self._liveness.close_monitors()
        for owned in (getattr(self, "_router", None), self._zap):
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
        liveness = self._liveness
        next_hb = next_keys = self._clock()
        # No peer can expire before this (LinkMonitor.expire), so the tracker
        # is only asked when it is due rather than on every loop turn.
        next_check = next_hb
        liveness.update_quorum()  # a 1-node cluster is quorate from the start
        handover, waker = self._handover, self._handover.waker
        assert waker is not None
        waker_fd, router, outq, quiet = waker.fd, self._router, handover.queue, self._quiet
        # Whatever the quiet sockets got while they were being set up has
        # already consumed its fd signal: look at each of them once.
        self._quiet_due.update(quiet)
        while self._running:
            now = self._clock()
            if now >= next_hb:
                if self._pending is not None:
                    self._apply_membership()
                liveness.send_heartbeats(self._links.values())
                next_hb = now + liveness.next_heartbeat_in()
                if self._ring is not None and now >= next_keys:  # checked at least once a heartbeat
                    next_keys = now + self._ring.tick(self.node)
            if now >= next_check:
                next_check = liveness.expire(now)
            wake_at = next_hb if next_hb < next_check else next_check
            timeout_ms = max(0, int((wake_at - self._clock()) * 1000) + 1)
            handover.idle = True
            if outq or self._quiet_due:  # work slipped in after the last turn: don't sleep
                timeout_ms = 0
            try:
                ready = self._poller.poll(timeout_ms)
                handover.idle = False
                for sock, _ in ready:
                    if sock is router:
                        self._drain_router()
                    elif sock == waker_fd:
                        waker.clear()
                    else:
                        self._quiet_due.add(sock)
                if self._quiet_due:
                    due, self._quiet_due = self._quiet_due, set()
                    for fd in due:
                        self._service(fd, quiet)
                if outq:
                    handover.drain(self._route, cfg.batch)
            except Exception as exc:  # the I/O thread must survive anything
                handover.idle = False
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

    # -- inbound

    def _drain_router(self) -> None:
        r, on_frame = self._router, self._on_frame
        self._now = self._clock()  # one clock read per batch is plenty for liveness
        for n in range(self.config.batch):
            # Before the second read of a batch, ask rather than try (a failed
            # recv costs several ZMQ_EVENTS queries); in a burst, read blindly.
            # After each "nothing" answer the next 1, 3, 7, then 15 turns do
            # not ask: everything done before sleeping delays the frame just
            # sent, and zmq_poll is level-triggered, so nothing is missed.
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
        ring = self._ring
        if ring is not None and not local and user not in ring.names:
            # SAFETY: a key revoked while its connection stays open (libzmq cannot
            # close one peer of a ROUTER): nothing it sends reaches any state.
            self._reject(origin, RejectReason.REVOKED_KEY, f"key of {user!r} no longer accepted")
            return
        try:
            env = self._decode(data, origin, user)
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
                self._heard(sender, body.incarnation, self._now)
            else:
                self._traffic(sender, self._now)
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

    def _emit(self, msg: Message) -> None:
        self._dispatch(Envelope(1, self.codec.cluster, self.node, msg.KIND, next(self._ids), msg))
