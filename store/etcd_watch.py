"""An etcd watch over the v3 JSON gateway: the etcd store's change notification.

The node's store watcher and its event publisher used to poll etcd (every
0.1 s and 0.05 s, a range request each). An :class:`EtcdWatcher` keeps one
streaming ``POST /v3/watch`` open on the keys of one cluster (its own
HTTP connection, on its own thread) and wakes every :class:`Subscription`
(an ``eventfd`` a caller sleeps on, like the dir store's inotify descriptor,
``store/inotify.py``) when a record changed. The subscribers then ask
``changed_since`` what changed, as before: the watch is a wake-up, never
the data.

* The stream is created with ``start_revision`` = the last revision seen + 1,
  so a reconnect (the member died, etcd restarted, the connection broke)
  loses no event; it is re-opened with a back-off, on the next member.
* A compacted start revision (the member answers ``compact_revision``) starts
  it again from the current revision and wakes every subscriber: they
  re-read with ``changed_since``, which is a range query by ``mod_revision``
  over the current keys and needs no history (a resync by full read).
* While the stream is down (``live`` False) the subscribers are woken on
  every change of state and poll, as they did before.
* A stream silent for ``idle_timeout`` s is re-opened: at rest the leases
  the cluster renews are events on it every ``renew_interval`` (a silent
  stream is one cut off without a reset).
* ``close()`` shuts the socket down and joins the thread.

Every request carries ``hasleader=true`` as the gateway's other calls do
(``store/etcd_gateway.py``): a member that lost its leader ends the stream and
the watcher moves on to another member.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import select
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final

from loguru import logger

from store.etcd_gateway import b64, unb64
from store.etcd_url import hostport

# seconds between two attempts to open the stream (doubling up to the maximum)
BACKOFF_MIN: Final = 0.05
BACKOFF_MAX: Final = 1.0
# a stream that sent nothing for this long is re-opened (see the module doc)
IDLE_TIMEOUT: Final = 30.0


class WatchEvent:
    """One change on a watched key: its key, value (empty for a delete) and revision."""

    __slots__ = ("deleted", "key", "mod", "value")

    def __init__(self, key: bytes, value: bytes, mod: int, deleted: bool) -> None:
        self.key = key
        self.value = value
        self.mod = mod
        self.deleted = deleted


class Subscription:
    """One caller's wake-up: an ``eventfd`` readable after a change (or a change of ``live``).

    The same interface as the dir store's :class:`store.inotify.DirWatch`: ``fd``
    (to register in a poller), :meth:`wait`, :attr:`live`, :attr:`safety_poll`,
    :meth:`close`.
    """

    # SAFETY: a stream that looks healthy may still be stuck (a connection cut
    # without a reset, a member that lags): while the watch is live a subscriber
    # still reads the store every `safety_poll` s, so a lost wake-up is late, never lost.
    safety_poll: float = 5.0

    def __init__(self, watcher: EtcdWatcher) -> None:
        self._watcher = watcher
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLIN)
        self.closed = False

    @property
    def live(self) -> bool:
        """True while changes are pushed; False: the stream is down, poll."""
        return self._watcher.live

    def notify(self) -> None:
        with contextlib.suppress(OSError):  # closed meanwhile
            os.eventfd_write(self.fd, 1)

    def wait(self, timeout: float) -> bool:
        """Sleep until woken (True) or ``timeout`` s passed (False); a burst is one wake-up."""
        if not self._poll.poll(max(0, math.ceil(timeout * 1000))):
            return False
        with contextlib.suppress(BlockingIOError, OSError):
            os.eventfd_read(self.fd)
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._watcher.unsubscribe(self)  # closes the fd under the lock a wake-up writes under


class EtcdWatcher:
    """A watch on the keys ``[key, range_end)`` of an etcd cluster, on its own thread.

    ``on_events`` is called (on the watcher's thread) with the events of every
    watch response; ``wake(events)`` says whether they are worth waking the
    subscribers for. ``start_revision`` None: from the current revision.
    The thread starts with the first :meth:`subscribe`.
    """

    def __init__(
        self,
        endpoints: Sequence[tuple[str, int]],
        key: bytes,
        range_end: bytes,
        *,
        ssl_context: ssl.SSLContext | None = None,
        on_events: Callable[[list[WatchEvent]], bool] | None = None,
        connect_timeout: float = 0.5,
        idle_timeout: float = IDLE_TIMEOUT,
        start_revision: int | None = None,
        name: str = "etcd-watch",
    ) -> None:
        self.endpoints = list(endpoints)
        self.key = key
        self.range_end = range_end
        self.ssl_context = ssl_context
        self.on_events = on_events
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.log = logger.bind(ident=name)
        self.live = False
        self.next_revision = start_revision  # the first revision the stream still has to deliver
        self.reconnects = 0  # streams opened after the first one (tests, metrics)
        self.resyncs = 0  # compactions that forced a start from the current revision
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._conn: http.client.HTTPConnection | None = None
        self._idx = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    # -- subscribers ----------------------------------------------------------------------

    def subscribe(self) -> Subscription:
        sub = Subscription(self)
        with self._lock:
            self._subs.append(sub)
            if not self._started:
                self._started = True
                self._thread.start()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            with contextlib.suppress(ValueError):
                self._subs.remove(sub)
            # under the lock: a wake-up never writes to a descriptor number reused meanwhile
            with contextlib.suppress(OSError):
                os.close(sub.fd)

    def _wake_all(self) -> None:
        with self._lock:
            for s in self._subs:
                s.notify()  # a non-blocking eventfd write

    def _set_live(self, live: bool) -> None:
        if live != self.live:
            self.live = live
            self._wake_all()  # they change between sleeping and polling

    # -- the stream -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop the thread (joined) and wake the subscribers one last time. Idempotent."""
        self._closed.set()
        self._abort()
        if self._started and self._thread is not threading.current_thread():
            self._thread.join(5)
        self.live = False
        self._wake_all()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _abort(self) -> None:
        conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)  # a blocked read returns at once

    def _run(self) -> None:
        backoff = BACKOFF_MIN
        first = True
        while not self._closed.is_set():
            host, port = self.endpoints[self._idx]
            created = False
            try:
                if not first:
                    self.reconnects += 1
                first = False
                created = self._stream(host, port)
            except (OSError, http.client.HTTPException, ValueError) as e:
                if not self._closed.is_set():
                    log = self.log.info if self.live else self.log.debug  # a stream lost, or a retry
                    log(f"watch on {hostport(host, port)} ended: {e or type(e).__name__}")
            finally:
                conn, self._conn = self._conn, None
                if conn is not None:
                    conn.close()
            if self._closed.is_set():
                break
            self._set_live(False)  # the subscribers poll until the next stream is created
            if created:
                backoff = BACKOFF_MIN  # it worked for a while: reconnect at once
                continue
            self._idx = (self._idx + 1) % len(self.endpoints)
            self._closed.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
        self.live = False

    def _connect(self, host: str, port: int) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self.ssl_context is not None:
            conn = http.client.HTTPSConnection(
                host, port, timeout=self.connect_timeout, context=self.ssl_context
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.connect_timeout)
        self._conn = conn
        if self._closed.is_set():
            raise OSError("closed")
        conn.connect()
        return conn

    def _stream(self, host: str, port: int) -> bool:
        """One watch stream until it ends; True if it was created (a reconnect needs no pause)."""
        conn = self._connect(host, port)
        create: dict[str, Any] = {"key": b64(self.key), "range_end": b64(self.range_end)}
        create["progress_notify"] = True  # an idle stream still moves next_revision on (every 10 min)
        if self.next_revision is not None:
            create["start_revision"] = str(self.next_revision)
        conn.request(
            "POST",
            "/v3/watch",
            body=json.dumps({"create_request": create}).encode(),
            headers={"Content-Type": "application/json", "Grpc-Metadata-hasleader": "true"},
        )
        assert conn.sock is not None
        conn.sock.settimeout(self.idle_timeout)
        resp = conn.getresponse()
        if resp.status != 200:
            raise OSError(f"watch answered HTTP {resp.status}: {resp.read(300)!r}")
        created = False
        while not self._closed.is_set():
            line = resp.readline()
            if not line:
                return created  # the stream ended (member stopped, leader lost)
            if not line.strip():
                continue
            msg = json.loads(line)
            if "error" in msg:
                raise OSError(f"watch error: {msg['error']}")
            result = msg.get("result") or {}
            header = result.get("header") or {}
            revision = int(header.get("revision", 0) or 0)
            if result.get("compact_revision") and int(result["compact_revision"]) > 0:
                # the revision we wanted to start from is gone: start from now, re-read everything
                self.log.info(f"watch: revision {self.next_revision} compacted: resync")
                self.next_revision = None
                self._set_live(False)  # down until the stream from now is created
                self.resyncs += 1
                self._wake_all()
                return True
            if result.get("canceled"):
                raise OSError(f"watch canceled: {result.get('cancel_reason') or 'no reason given'}")
            if result.get("created"):
                created = True
                if self.next_revision is None:
                    self.next_revision = revision + 1
                    self._wake_all()  # a first stream, or one after a resync: look at the store now
                if not self.live:
                    self.log.info(f"watching {hostport(host, port)} from revision {self.next_revision}")
                self._set_live(True)
                continue
            events = [_event(e) for e in result.get("events") or []]
            if events:
                self.next_revision = max(self.next_revision or 0, max(e.mod for e in events) + 1)
                if self.on_events is None or self.on_events(events):
                    self._wake_all()
            elif revision:  # a progress notification: every event up to it was sent
                self.next_revision = max(self.next_revision or 0, revision + 1)
        return created


def _event(e: dict[str, Any]) -> WatchEvent:
    kv = e.get("kv") or {}
    mod = int(kv.get("mod_revision", 0) or 0)
    return WatchEvent(unb64(kv.get("key")), unb64(kv.get("value")), mod, e.get("type") == "DELETE")
