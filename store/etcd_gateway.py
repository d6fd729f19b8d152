"""etcd's v3 JSON gateway over HTTP/1.1, with failover between members and a deadline.

The etcd store (``store/etcdstore.py``) speaks to etcd through :class:`Gateway`
only: ``POST /v3/kv/range`` ... with JSON bodies, standard library only (no
gRPC, no protobuf). It keeps a small pool of keep-alive connections per
member and fails over between the members. The rules the store's lease
argument leans on (docs/ETCD.md):

* every call ends by its ``deadline``: an answer, or :class:`StoreError`;
* a request that never left (no connection: ``_Unsent``) may go to another
  member; so may one etcd refused before proposing it ("no leader", ...);
* a *mutating* request whose answer was lost (``_Lost``) is never re-sent:
  its outcome is unknown, the caller gets a :class:`StoreError` and re-reads;
* every request carries the gRPC metadata ``hasleader=true``, so a member
  that lost its leader answers "no leader" at once instead of queueing it;
* :attr:`Gateway.quorum_contact` is when (``time.monotonic``) the last successful
  linearizable request (a range read or a transaction: etcd answers either only
  through a leader a majority follows) started: the node's store-health probe
  counts it (actors/node.py ``StoreHealth``);
* with an ``ssl_context`` (``store/etcd_tls.py``: the cluster's CA, our client
  certificate) every connection is TLS; without one, plain HTTP, which only an
  ``insecure`` store URL asks for (docs/ETCD.md "TLS").
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import math
import random
import select
import ssl
import threading
import time
from collections.abc import Sequence
from typing import Any, Final

from store.base import StoreError
from store.etcd_url import hostport

# requests etcd answers only after a majority confirmed its leader (linearizable reads, raft writes)
_QUORUM_PATHS: Final = frozenset({"/v3/kv/range", "/v3/kv/txn"})

# gRPC status messages of requests that etcd rejected before proposing them: safe to re-send.
_REJECTED_UNSENT: Final = (
    "etcdserver: no leader",
    "etcdserver: not capable",
    "etcdserver: too many requests",
)


def b64(data: bytes | str) -> str:
    """Keys and values travel base64-encoded in the gateway's JSON."""
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode("ascii")


def unb64(text: object) -> bytes:
    return base64.b64decode(text) if isinstance(text, str) and text else b""


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix`` (etcd range_end)."""
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\x00"


class _Unsent(Exception):
    """The request never left (no connection): safe to send elsewhere."""


class _Lost(Exception):
    """The request went out but no answer came back: its outcome is unknown."""


class EtcdServerError(StoreError):
    """etcd answered with an error (``code`` is the gRPC status code)."""

    def __init__(self, message: str, code: int) -> None:
        self.code = code
        super().__init__(message)


class Gateway:
    """POST JSON to the v3 gateway of one of several members, with failover and a deadline."""

    def __init__(
        self,
        endpoints: Sequence[tuple[str, int]],
        *,
        connect_timeout: float = 0.5,
        read_try_timeout: float = 0.7,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.endpoints = list(endpoints)
        self.ssl_context = ssl_context
        self.connect_timeout = connect_timeout
        # A read waits this long for one member before it asks the next (a member cut off
        # from its peers may sit on a linearizable read); a write waits for its deadline.
        self.read_try_timeout = read_try_timeout
        self._pool: dict[int, list[http.client.HTTPConnection]] = {i: [] for i in range(len(endpoints))}
        self._lock = threading.Lock()
        self._preferred = random.randrange(len(endpoints))  # spread clients over the members
        self.quorum_contact = -math.inf  # start (monotonic) of the last successful _QUORUM_PATHS call

    @property
    def where(self) -> str:
        return ",".join(hostport(h, p) for h, p in self.endpoints)

    def close(self) -> None:
        with self._lock:
            conns = [c for lst in self._pool.values() for c in lst]
            for lst in self._pool.values():
                lst.clear()
        for c in conns:
            c.close()

    def call(self, path: str, body: dict[str, Any], *, deadline: float, mutating: bool) -> dict[str, Any]:
        """The decoded answer; StoreError once ``deadline`` (monotonic) passes.

        A ``mutating`` request is re-sent only when it surely did not take effect.
        """
        # SAFETY: the start of the call, before anything is sent: an answer proves contact after it
        t_start = time.monotonic()
        payload = json.dumps(body, separators=(",", ":")).encode()
        last: dict[int, str] = {}  # endpoint -> what went wrong there last
        tried = 0
        n = len(self.endpoints)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                why = "; ".join(f"{hostport(*self.endpoints[i])} {e}" for i, e in sorted(last.items()))
                raise StoreError(f"etcd: {path}: no answer in time ({why or 'no endpoint tried'})")
            with self._lock:
                idx = self._preferred
            where = hostport(*self.endpoints[idx])
            try:
                per_try = remaining if mutating else min(remaining, self.read_try_timeout)
                status, data = self._once(idx, path, payload, per_try)
            except _Unsent as e:
                last[idx] = str(e)
                self._rotate(idx)
                tried += 1
                if tried % n == 0:  # every member refused: pause a little before the next round
                    time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                continue
            except _Lost as e:
                self._drop(idx)  # its other idle connections may be as dead as this one
                self._rotate(idx)
                if mutating:
                    raise StoreError(f"etcd {where}: {path}: no answer ({e}); outcome unknown") from None
                last[idx] = f"no answer ({e})"
                continue
            if status == 200:
                with self._lock:
                    self._preferred = idx
                    if path in _QUORUM_PATHS and not body.get("serializable"):
                        self.quorum_contact = max(self.quorum_contact, t_start)
                return data
            message = str(data.get("error") or data.get("message") or f"HTTP {status}")
            code = int(data.get("code", 2)) if str(data.get("code", "")).isdigit() else 2
            retry = any(m in message for m in _REJECTED_UNSENT) or (not mutating and code in (4, 8, 14))
            if not retry:
                raise EtcdServerError(f"etcd {where}: {path}: {message}", code)
            last[idx] = message
            self._rotate(idx)
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _drop(self, idx: int) -> None:
        with self._lock:
            conns, self._pool[idx] = self._pool[idx], []
        for c in conns:
            c.close()

    def _rotate(self, idx: int) -> None:
        with self._lock:
            if self._preferred == idx:
                self._preferred = (idx + 1) % len(self.endpoints)

    def _checkout(self, idx: int, remaining: float) -> tuple[http.client.HTTPConnection, bool]:
        while True:
            with self._lock:
                conn = self._pool[idx].pop() if self._pool[idx] else None
            if conn is None:
                break
            if conn.sock is not None and not _dropped(conn.sock):
                return conn, True
            conn.close()
        host, port = self.endpoints[idx]
        timeout = min(remaining, self.connect_timeout)
        if self.ssl_context is not None:  # the TLS handshake is part of connect(), within the timeout
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self.ssl_context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.connect()
        except OSError as e:
            conn.close()
            raise _Unsent(str(e) or type(e).__name__) from None
        return conn, False

    def _once(self, idx: int, path: str, payload: bytes, remaining: float) -> tuple[int, dict[str, Any]]:
        conn, _reused = self._checkout(idx, remaining)
        try:
            assert conn.sock is not None
            conn.sock.settimeout(max(0.001, remaining))
            conn.request(
                "POST",
                path,
                body=payload,
                headers={"Content-Type": "application/json", "Grpc-Metadata-hasleader": "true"},
            )
            resp = conn.getresponse()
            raw = resp.read()
            status = resp.status
            reusable = not resp.will_close
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise _Lost(str(e) or type(e).__name__) from None
        if reusable:
            with self._lock:
                self._pool[idx].append(conn)
        else:
            conn.close()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {"error": f"HTTP {status}: undecodable answer {raw[:80]!r}"}
        if not isinstance(data, dict):
            data = {"error": f"HTTP {status}: unexpected answer {raw[:80]!r}"}
        return status, data


def _dropped(sock: Any) -> bool:
    """True if an idle keep-alive connection was closed by the server (EOF or junk pending).

    On TLS, bytes may be pending that are no data (a TLS 1.3 session ticket): they are
    read through the TLS layer, and only data or an end count as dropped.
    """
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    if not readable:
        return False
    if not isinstance(sock, ssl.SSLSocket):
        return True
    timeout = sock.gettimeout()
    try:
        sock.setblocking(False)
        sock.recv(1)  # data or EOF on an idle connection: not usable either way
        return True
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return False  # only TLS records (no application data)
    except OSError:
        return True
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(timeout)
