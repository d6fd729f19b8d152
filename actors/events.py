"""One node's event stream (docs/API.md "Events"): a ZeroMQ PUB socket, CURVE-protected like the bus.

It publishes service, node, master, fencing, lrm, disarm and quorum changes,
derived from the records every node shares (manager_status and lrm_status
diffs, :func:`diff_events`), so it needs no hook in the daemons; the
master's writes are fed in as they happen (``StatusWritten``, see
actors/api.py) so that no transition is folded.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgpack  # type: ignore[import-untyped]
import zmq
from loguru import logger
from zmq.utils.monitor import recv_monitor_message

from admin.cluster import ClusterConfig
from admin.ops import API_VERSION
from bus.config import TransportConfig
from bus.guard import GUARD_EVENTS, InboundGuard
from bus.handover import Waker
from bus.keys import CurveKeys, KeyRing
from bus.ratelog import RateLimitedLog
from bus.zap import ZapHandler
from ha.errors import HaError
from ha.records import ManagerStatus
from store import records as rec
from store.base import ChangeWatch, Store, open_watch

# while fed by this node's master (StatusWritten), manager_status changes come from the feed only
FEED_HOLD = 2.0
# what a subscriber may send: subscriptions (a topic prefix) and its handshake, nothing larger
MAX_SUBSCRIPTION_BYTES = 4096  # above the CURVE handshake commands (INITIATE carries metadata)
# Issue #17, a node at rest: the publisher sleeps on the store's change watch (inotify on
# the dir store's journal, an etcd watch) and reads the store when it was written, or at
# the latest every `safety_poll` s of the watch (1 s dir, 5 s etcd); it looks at this
# node's quorum every QUORUM_CHECK s. Every wake-up costs about 0.1 ms of CPU on its own,
# so the timers run in step: each is re-armed from the same clock reading, and a timer
# due within TIMER_SLACK runs with the others. While nobody is subscribed no timer is armed
# at all: the thread sleeps until a subscriber, a ZAP request or a stop wakes it.
QUORUM_CHECK = 0.5
TIMER_SLACK = 0.05


def diff_events(
    old_ms: ManagerStatus | None,
    new_ms: ManagerStatus,
    old_lrm: Mapping[str, tuple[str | None, str | None]],
    new_lrm: Mapping[str, tuple[str | None, str | None]],
) -> list[dict[str, Any]]:
    """The events between two views of the shared records (pure; docs/API.md "Events")."""
    if old_ms is None:
        return []
    out: list[dict[str, Any]] = []
    if old_ms.master_node != new_ms.master_node:
        out.append({"type": "master", "old": old_ms.master_node, "new": new_ms.master_node})
    for n in sorted(set(old_ms.node_status) | set(new_ms.node_status)):
        a, b = old_ms.node_status.get(n), new_ms.node_status.get(n)
        if a == b:
            continue
        out.append({"type": "node", "node": n, "old": a, "new": b})
        if b == "fence":
            out.append({"type": "fence", "node": n, "phase": "pending"})
        elif a == "fence":
            out.append({"type": "fence", "node": n, "phase": "done" if b in ("unknown", "online") else b})
    if old_ms.disarm != new_ms.disarm:
        out.append({"type": "disarm", "old": old_ms.disarm, "new": new_ms.disarm})
    for sid in sorted(set(old_ms.service_status) | set(new_ms.service_status)):
        a_sd, b_sd = old_ms.service_status.get(sid), new_ms.service_status.get(sid)
        a_key = (a_sd.state, a_sd.node, a_sd.target) if a_sd else (None, None, None)
        b_key = (b_sd.state, b_sd.node, b_sd.target) if b_sd else (None, None, None)
        if a_key != b_key:
            out.append({
                "type": "service", "sid": sid, "old_state": a_key[0], "old_node": a_key[1],
                "state": b_key[0], "node": b_key[1], "target": b_key[2],
            })  # fmt: skip
    for n in sorted(set(old_lrm) | set(new_lrm)):
        a_l, b_l = old_lrm.get(n, (None, None)), new_lrm.get(n, (None, None))
        if a_l != b_l:
            out.append({
                "type": "lrm", "node": n, "old_state": a_l[0], "old_mode": a_l[1],
                "state": b_l[0], "mode": b_l[1],
            })  # fmt: skip
    return out


class EventPublisher:
    """One node's event stream: a PUB socket, CURVE-protected like the bus.

    Messages have two frames: the topic (the event type, UTF-8; subscribe by
    prefix) and one msgpack map ``{v, cluster, source, seq, time, type, ...}``.
    A ``heartbeat`` every ``heartbeat`` seconds lets subscribers notice a
    silent publisher. The endpoint (an ephemeral port on the node's bus host)
    is announced by the API's ``info`` operation.

    At rest its thread sleeps: it wakes for a fed status (:meth:`feed`), a
    record written (the store's change watch, ``Store.watch()``: inotify on the dir
    store's journal, an etcd watch), a subscriber connecting, and its timers
    (heartbeat, key refresh, quorum check, store probe every ``safety_poll`` s of
    the watch). Without a watch, or while it is down, it reads the store every
    ``interval`` s as before.
    """

    def __init__(
        self,
        node: str,
        cluster: ClusterConfig,
        store: Store,
        quorate: Callable[[], bool],
        *,
        interval: float = 0.05,
        heartbeat: float = 1.0,
    ) -> None:
        self.node = node
        self.cluster = cluster
        self.store = store
        self.quorate = quorate
        self.interval = interval
        self.heartbeat = heartbeat
        self.endpoint: str | None = None
        self.log = logger.bind(ident=f"{node}/events")
        self._stop = threading.Event()
        self._fed: collections.deque[ManagerStatus] = collections.deque(maxlen=1000)
        self._topics: set[bytes] = set()  # what subscribers subscribed to (XPUB)
        self._last_feed = -FEED_HOLD
        self._thread: threading.Thread | None = None
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._seq = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        # the bus's key ring, ZAP handler and connection guard, on the publisher's own thread
        self.counts: dict[str, int] = {}
        self._rlog = RateLimitedLog()
        self._keys: CurveKeys | None = None
        self._zap: ZapHandler | None = None
        self._pinned_for: dict[str, str] | None = None  # the members whose keys the ring pins
        self._guard: InboundGuard | None = None
        self._mon: zmq.Socket[bytes] | None = None
        self._waker: Waker | None = None  # feed() and stop() wake the thread through it

    def start(self) -> None:
        self._waker = Waker()
        self._thread = threading.Thread(target=self._run, name=f"events-{self.node}", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            self._waker.close()
            raise self._error

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(5)
        if self._waker is not None and (self._thread is None or not self._thread.is_alive()):
            self._waker.close()

    def _wake(self) -> None:
        waker = self._waker
        if waker is not None:
            waker.wake()  # a no-op once closed

    def _count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def _open(self) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes] | None]:
        self._ctx = ctx = zmq.Context()
        zap: zmq.Socket[bytes] | None = None
        if self.cluster.curve:
            # the bus's ZAP handler and key ring (bus.zap, bus.keys): one of each in the code base
            self._keys = keys = CurveKeys.load(self.cluster.keys_dir, self.node)
            self._pinned_for = self.cluster.nodes
            self._zap = ZapHandler(self.node, KeyRing.of(keys, self.cluster.nodes), self._count, self._rlog)
            # SAFETY: the ZAP handler exists before the socket binds, else libzmq admits any key
            zap = self._zap.open(ctx)
        host = self.cluster.nodes[self.node].removeprefix("tcp://").rpartition(":")[0] or "127.0.0.1"
        try:
            return self._bind(f"tcp://{host}:*"), zap
        except BaseException:
            if zap is not None:
                zap.close(linger=0)
            raise

    def _follow_members(self, zap: ZapHandler) -> frozenset[str]:
        """The members changed (actors/members.py replaces ``cluster.nodes``): pin the new
        members' keys, unpin the one that left (refused once its key file is gone); the
        names no longer accepted."""
        members = self.cluster.nodes
        if members is self._pinned_for:
            return frozenset()
        self._pinned_for = members
        try:
            found = CurveKeys.load(self.cluster.keys_dir, self.node).authorized
        except HaError:
            return frozenset()
        return zap.ring.pin({n: found[n] for n in members if n in found})

    def _bind(self, endpoint: str) -> zmq.Socket[bytes]:
        """A new PUB socket bound at ``endpoint``, its connections guarded like the bus's (bus.guard)."""
        assert self._ctx is not None
        cfg = TransportConfig()
        # XPUB: the subscriptions reach us, so the store is followed only while someone listens
        pub = self._ctx.socket(zmq.XPUB)
        self._topics.clear()
        try:
            pub.setsockopt(zmq.LINGER, 0)
            pub.setsockopt(zmq.SNDHWM, 1000)
            pub.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)
            pub.setsockopt(zmq.HANDSHAKE_IVL, max(1, int(cfg.handshake_timeout * 1000)))
            if self._keys is not None:
                pub.setsockopt(zmq.CURVE_SERVER, 1)
                pub.setsockopt(zmq.CURVE_SECRETKEY, self._keys.secret)
                pub.setsockopt(zmq.CURVE_PUBLICKEY, self._keys.public)
                pub.setsockopt(zmq.ZAP_DOMAIN, self.cluster.cluster.encode())
                pub.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
            self._guard = InboundGuard.of(self.node, cfg, self._count, self._rlog)
            self._mon = pub.get_monitor_socket(GUARD_EVENTS)
            for attempt in range(20):  # the old socket's port may take a moment to be free again
                try:
                    pub.bind(endpoint)
                    break
                except zmq.ZMQError as e:
                    if e.errno != zmq.EADDRINUSE or attempt == 19:
                        raise
                    time.sleep(0.05)
        except BaseException:
            self._close_pub(pub)
            raise
        self.endpoint = self._guard.bound(pub.getsockopt_string(zmq.LAST_ENDPOINT))
        return pub

    def _close_pub(self, pub: zmq.Socket[bytes]) -> None:
        if self._mon is not None:
            with contextlib.suppress(zmq.ZMQError):
                pub.disable_monitor()
            self._mon.close(linger=0)
            self._mon = None
        pub.close(linger=0)

    def _revoke(self, pub: zmq.Socket[bytes]) -> zmq.Socket[bytes]:
        """A key was revoked: drop every subscriber (a PUB cannot drop one); the others reconnect."""
        assert self.endpoint is not None
        self.log.warning("a client key was revoked: event subscribers reconnect")
        endpoint = self.endpoint
        self._close_pub(pub)
        return self._bind(endpoint)

    def _run(self) -> None:
        try:
            pub, zap = self._open()
        except BaseException as e:
            self._error = e
            self._ready.set()
            self._close()
            return
        self._ready.set()
        self.log.info(f"events published on {self.endpoint}")
        watch = open_watch(self.store)
        waker = self._waker
        assert waker is not None
        next_keys = next_probe = next_quorum = next_hb = 0.0
        last_read = -self.interval
        token: str | None = None
        ms: ManagerStatus | None = None
        lrm: dict[str, tuple[str | None, str | None]] = {}
        quorate: bool | None = None
        poller = self._poller(pub, zap, waker, watch)
        revoked: frozenset[str] = frozenset()  # names the keys check must still act on
        try:
            while not self._stop.is_set():
                if self._topics:
                    keys = next_keys if self._zap is not None else next_hb
                    due = min(next_probe, next_quorum, next_hb, keys)
                    timeout = max(0, int((due - time.monotonic()) * 1000) + 1)
                else:
                    # Nobody listens: no timer is armed (no store probe, quorum look, heartbeat
                    # or keys check for nobody; issue #17). A subscriber or a ZAP request wakes
                    # the thread, and whatever timer is overdue runs in that turn, before any
                    # event is published.
                    timeout = -1
                store_written = False
                for sock, _ in poller.poll(timeout):
                    if zap is not None and sock is zap and self._zap is not None:
                        # SAFETY: follow a membership change before authenticating (a removed
                        # member's key is unpinned), also after sleeping while nobody listened;
                        # authenticate() re-reads the key directory itself.
                        revoked |= self._follow_members(self._zap)
                        self._zap.handle(zap)
                    elif self._mon is not None and sock is self._mon and self._guard is not None:
                        event = recv_monitor_message(self._mon)
                        self._guard.event(event["event"], int(event["value"]))
                    elif sock == waker.fd:
                        waker.clear()
                    elif watch is not None and sock == watch.fd:
                        watch.wait(0)  # drain: one read of the store for a burst of writes
                        store_written = True
                    elif sock is pub:
                        was = bool(self._topics)
                        self._subscriptions(pub)
                        if self._topics and not was:  # the first subscriber: a baseline read now
                            store_written, last_read, next_probe = True, -self.interval, 0.0
                now = time.monotonic()
                listening = bool(self._topics)
                if not listening:
                    # Nobody listens (issue #15: at scale every node parsed every status write
                    # for nobody): forget the view; a new subscriber starts from a fresh one and
                    # is told only what changes after its subscription (docs/API.md "Events").
                    token, ms, lrm, quorate = None, None, {}, None
                    self._fed.clear()
                soon = now + TIMER_SLACK  # timers due within it run now: one wake-up for several
                if self._zap is not None and (soon >= next_keys or revoked):
                    next_keys = now + 1.0
                    revoked |= self._zap.ring.refresh() | self._follow_members(self._zap)
                    if revoked:
                        revoked = frozenset()
                        pub = self._revoke(pub)
                        poller = self._poller(pub, zap, waker, watch)  # the new socket's monitor
                while self._fed:
                    fed = self._fed.popleft()
                    if ms is not None and _newer(fed, ms):
                        for ev in diff_events(ms, fed, lrm, lrm):
                            self._publish(pub, ev)
                        ms = fed
                if listening and watch is not None and not watch.live:  # etcd watch down: poll
                    next_probe = min(next_probe, last_read + self.interval)
                read = listening and (store_written or soon >= next_probe)
                if read and now < last_read + self.interval:
                    # a busy store (a cluster starting) is read at most every `interval`, as
                    # when this polled: the rest of the node (watchdog pets) needs the GIL
                    next_probe = last_read + self.interval
                elif read:
                    if soon >= next_probe:  # a read for a write does not move the probe: in step
                        next_probe = now + (watch.safety_poll if watch is not None else self.interval)
                    last_read = now
                    token, ms, lrm = self._follow_store(pub, token, ms, lrm)
                if listening and soon >= next_quorum:
                    next_quorum = now + QUORUM_CHECK
                    q = self.quorate()
                    if quorate is not None and q != quorate:
                        self._publish(pub, {"type": "quorum", "quorate": q})
                    quorate = q
                if listening and soon >= next_hb:
                    next_hb = now + self.heartbeat
                    master = ms.master_node if ms is not None else None
                    self._publish(pub, {"type": "heartbeat", "quorate": quorate, "master": master})
        finally:
            if watch is not None:
                watch.close()
            self._close_pub(pub)
            self._close(zap)

    def _subscriptions(self, pub: zmq.Socket[bytes]) -> None:
        """Read what subscribers sent: ``\\x01topic`` (a first subscriber) or ``\\x00topic`` (the last
        one of that topic left; libzmq sends it when a subscriber disconnects too)."""
        while True:
            try:
                msg = pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self._topics.add(msg[1:])
            elif msg[:1] == b"\x00":
                self._topics.discard(msg[1:])

    def _poller(
        self, pub: zmq.Socket[bytes], zap: zmq.Socket[bytes] | None, waker: Waker, watch: ChangeWatch | None
    ) -> zmq.Poller:
        poller = zmq.Poller()
        poller.register(pub, zmq.POLLIN)
        for s in (zap, self._mon):
            if s is not None:
                poller.register(s, zmq.POLLIN)
        poller.register(waker.fd, zmq.POLLIN)
        if watch is not None:
            poller.register(watch.fd, zmq.POLLIN)
        return poller

    def _follow_store(
        self,
        pub: zmq.Socket[bytes],
        token: str | None,
        ms: ManagerStatus | None,
        lrm: dict[str, tuple[str | None, str | None]],
    ) -> tuple[str | None, ManagerStatus | None, dict[str, tuple[str | None, str | None]]]:
        """Publish what changed in the store's records since ``token``; the new (token, ms, lrm)."""
        try:
            changes = self.store.changed_since(token)
            token = changes.token
            names = changes.names
            everything = ms is None or names is None  # the first look, or the journal was rotated
            if not everything and names is not None and rec.MANAGER_STATUS not in names:
                # only what was written is read again (issue #17: at rest, one LRM's status)
                nodes = [
                    n for n in sorted(set(self.cluster.nodes) | set(lrm)) if rec.lrm_status_name(n) in names
                ]
                if not nodes:
                    return token, ms, lrm
                new_ms = ms
            else:
                new_ms, _ = rec.read_manager_status(self.store)
                if ms is not None and (self._fed_recently() or _newer(ms, new_ms)):
                    # this node's master feeds every write: the store could only fold them
                    new_ms = ms
                nodes = sorted(set(self.cluster.nodes) | set(new_ms.node_status))
            assert new_ms is not None
            new_lrm = dict(lrm)
            for n in nodes:
                st = rec.read_lrm_status(self.store, n)
                new_lrm[n] = (st.state, st.mode)
            for ev in diff_events(ms, new_ms, lrm, new_lrm):
                self._publish(pub, ev)
            ms, lrm = new_ms, new_lrm
        except HaError as e:
            self.log.warning(f"cannot read the records: {e}")
        return token, ms, lrm

    def feed(self, ms: ManagerStatus) -> None:
        """Every manager status the master writes (from any thread): no transition is folded."""
        if not self._topics:
            return  # nobody listens: a subscriber starts from a fresh read of the store
        self._last_feed = time.monotonic()
        self._fed.append(ms)
        self._wake()

    def _fed_recently(self) -> bool:
        return time.monotonic() - self._last_feed < FEED_HOLD

    def _publish(self, pub: zmq.Socket[bytes], ev: dict[str, Any]) -> None:
        self._seq += 1
        body = {"v": API_VERSION, "cluster": self.cluster.cluster, "source": self.node, "seq": self._seq,
                "time": time.time(), **ev}  # fmt: skip
        with contextlib.suppress(zmq.Again):
            pub.send_multipart([str(ev["type"]).encode(), msgpack.packb(body)], zmq.NOBLOCK)

    def _close(self, *socks: zmq.Socket[bytes] | None) -> None:
        for s in socks:
            if s is not None:
                s.close(linger=0)
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None


def _newer(a: ManagerStatus, b: ManagerStatus) -> bool:
    """Is ``a`` a later write than ``b``? (the master stamps every write)"""
    return a.timestamp is not None and (b.timestamp is None or a.timestamp > b.timestamp)
