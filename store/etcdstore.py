"""The ``etcd`` store backend: records and leases in an etcd v3 cluster (many hosts).

Opened from an ``etcd://`` URL (``store/etcd_url.py``) by ``store.open_store``.
It talks to etcd through ``store/etcd_gateway.py`` (the v3 JSON gateway with
failover): every Store call is bounded by the URL's ``timeout`` (default
2 s) after which it raises :class:`StoreError`, and a mutating request whose
answer was lost is never re-sent (the caller gets a :class:`StoreError` and
re-reads). It talks TLS with a client certificate (``tls``, from the URL's
``ca``/``cert``/``key``), or plain HTTP only when told ``insecure`` (docs/ETCD.md
"TLS"). See docs/ETCD.md for the full argument.

Keys under ``/pyha/<cluster>/``::

    records/<name>   the record's bytes; version = its mod_revision (decimal).
                     From 8 KiB on they are stored zlib-compressed (store/etcd_pack.py)
                     behind the tag ``\x00z`` (a value that begins with NUL
                     otherwise is stored behind ``\x00r``): issue #15, a
                     ``manager_status`` of 2,000 services is 200 KB in JSON and
                     20 KB compressed, written every round, copied to every etcd
                     member and read by every node after each change
    changes/<name>   touched in the same transaction as every change of the
                     record (write, append, take, delete): changed_since is a
                     range query by mod_revision over this prefix
    leases/<name>    {"holder": ..., "ttl": ...}, bound to an etcd lease

Leases: the lease key is the lock. Holding it is counted on local
CLOCK_BOOTTIME clocks (monotonic, and counting through a suspend: a resumed
holder knows its lease ran out), never on etcd's lease timers (integer seconds, a 2-3 s minimum, and
reset on every leader change):

* the holder, after a successful create/renew/take-over whose request it
  sent at ``t_send``, may rely on it until ``t_send + ttl`` (and a caller
  that read ``t0`` before the call until ``t0 + ttl``, which is earlier);
* any other client counts the lease as expired only when the key has kept
  the same mod_revision for ``ttl`` seconds of *its* clock since it first saw
  that revision in a response; the take-over is a transaction conditional
  on that very revision, so any renewal in between makes it fail. A response
  arrives after the write it shows was committed, and that commit came after
  the writer's ``t0``: the take-over cannot come before ``t0 + ttl``.
* renewals rewrite the key (a raft write: only a client that reaches the
  etcd majority can renew), so every renewal is a new revision.

The etcd lease bound to the key is only a garbage collector for keys of
holders that vanished: its TTL is ``ceil(ttl) + 10`` s, and the holder keeps
its server-side expiry at least 5 s beyond its own deadline (it sends a
keep-alive before renewing the key when needed, counting from the moment it
*sent* the keep-alive), so etcd never deletes a key its holder still relies
on; on a leader change etcd only extends lease timers (docs/ETCD.md).

Change notification: :meth:`EtcdStore.watch` subscribes to one etcd watch
(``store/etcd_watch.py``) on ``changes/`` and ``leases/``: a change of a record
wakes the subscribers; a lease key's new revision is noted as "first seen"
when it arrives, as a read would note it (later than its commit, so safe).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from fence.clock import boottime
from store import etcd_batch
from store.base import (
    ABSENT,
    Changes,
    LeaseInfo,
    Record,
    StoreError,
    VersionConflict,
    check_lease_name,
    check_name,
)
from store.etcd_gateway import EtcdServerError, Gateway, b64, prefix_end
from store.etcd_kv import Backstop, Held, Kv, lease_value, parse_kvs, range_in, revision_of
from store.etcd_pack import pack, record_of, unpack
from store.etcd_reads import ReadCache
from store.etcd_tls import TlsFiles, client_context
from store.etcd_url import (
    DEFAULT_CLUSTER,
    DEFAULT_TIMEOUT,
    INSECURE_HINT,
    EtcdUrl,
    hostport,
    parse_endpoint,
    parse_url,
    split_scheme,
)
from store.etcd_watch import EtcdWatcher, Subscription, WatchEvent

__all__ = ["EtcdServerError", "EtcdStore", "EtcdUrl", "parse_url"]

ROOT: Final = "/pyha"

# The etcd lease bound to a lease key outlives the holder's own deadline by at least
# BACKSTOP_MARGIN; it is granted with ttl + BACKSTOP_SLACK and kept alive when needed.
BACKSTOP_SLACK: Final = 10
BACKSTOP_MARGIN: Final = 5.0
# append retries its compare-and-swap under contention for up to this many timeouts.
CONTENTION_FACTOR: Final = 4.0
_LEASE_NOT_FOUND: Final = "requested lease not found"


class EtcdStore:
    """:class:`store.base.Store` on an etcd v3 cluster (see the module doc and docs/ETCD.md)."""

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        cluster: str = DEFAULT_CLUSTER,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        tls: TlsFiles | None = None,
        insecure: bool = False,
        clock: Callable[[], float] = boottime,
    ) -> None:
        """``tls``: the CA to verify the members and our client certificate; required
        unless ``insecure`` (plain http, refused otherwise: docs/ETCD.md "TLS")."""
        eps = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        schemes = {split_scheme(e)[0] for e in eps}
        parsed = tuple(parse_endpoint(split_scheme(e)[1]) for e in eps)
        if not parsed:
            raise ValueError("etcd store: no endpoint")
        check_lease_name(cluster)
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"etcd store: timeout must be > 0, got {timeout}")
        if insecure and (tls is not None or "https" in schemes):
            raise ValueError("etcd store: insecure (plain http) and TLS contradict")
        if not insecure and (tls is None or "http" in schemes):
            raise ValueError(f"etcd store: plain http refused; {INSECURE_HINT}")
        # a bad or missing certificate file fails here, at once, not as a timeout later
        try:
            context = client_context(tls) if tls is not None else None
        except OSError as e:  # ssl.SSLError is one
            assert tls is not None
            raise StoreError(
                f"etcd store: cannot load the TLS files {tls.ca}, {tls.cert}, {tls.key}: {e}"
            ) from None
        self._where = EtcdUrl(parsed, cluster, timeout, insecure=insecure)
        if tls is not None:
            self._where = EtcdUrl(
                parsed, cluster, timeout, ca=str(tls.ca), cert=str(tls.cert), key=str(tls.key)
            )
        self.cluster = cluster
        self.timeout = timeout
        self._clock = clock
        self._gw = Gateway(
            parsed,
            connect_timeout=max(0.05, min(0.5, timeout / 4)),
            read_try_timeout=max(0.2, timeout / 3),
            ssl_context=context,
        )
        base = f"{ROOT}/{cluster}/"
        self._records = (base + "records/").encode()
        self._changes = (base + "changes/").encode()
        self._leases = (base + "leases/").encode()
        self._lock = threading.Lock()  # guards the three dicts below
        self._held: dict[str, Held] = {}
        self._seen: dict[str, tuple[int, float]] = {}  # lease name -> (mod_revision, first seen at)
        self._backstops: dict[str, Backstop] = {}
        self._watcher: EtcdWatcher | None = None
        self._reads = ReadCache(self)

    @classmethod
    def from_url(cls, url: str) -> EtcdStore:
        u = parse_url(url)
        tls = TlsFiles(*(Path(p) for p in u.tls)) if u.tls is not None else None
        return cls(
            [hostport(h, p) for h, p in u.endpoints],
            u.cluster,
            timeout=u.timeout,
            tls=tls,
            insecure=u.insecure,
        )

    @property
    def url(self) -> str:
        return str(self._where)

    def close(self) -> None:
        """Close the connections, stop the watch. Leases stay (they expire); the object can still be used."""
        with self._lock:
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.close()
        self._gw.close()

    def quorum_contact(self) -> float:
        """When (``time.monotonic``) the last successful linearizable request started."""
        return self._gw.quorum_contact

    def watch(self) -> Subscription:
        """A wake-up on every record change (``store/etcd_watch.py``); close it when done."""
        with self._lock:
            if self._watcher is None:
                self._watcher = EtcdWatcher(
                    self._gw.endpoints,
                    self._changes,
                    prefix_end(self._leases),  # changes/ and leases/ (sorted: changes < leases < records)
                    ssl_context=self._gw.ssl_context,
                    on_events=self._watched,
                    connect_timeout=self._gw.connect_timeout,
                    name=f"etcd-watch-{self.cluster}",
                )
            watcher = self._watcher
        return watcher.subscribe()

    def _watched(self, events: builtins.list[WatchEvent]) -> bool:
        """Note the lease revisions (from the watcher's thread); True if a record changed."""
        records = False
        n = len(self._leases)
        for e in events:
            if not e.key.startswith(self._leases):
                records = True
                continue
            name = e.key[n:].decode(errors="replace")
            t_seen = self._clock()  # SAFETY: read after the event arrived, so after its commit
            with self._lock:
                prev = self._seen.get(name)
                if prev is not None and e.mod <= prev[0]:
                    continue  # a lagging stream never moves it back
                if e.deleted:
                    self._seen.pop(name, None)
                else:
                    self._seen[name] = (e.mod, t_seen)
        return records

    # -- plumbing ---------------------------------------------------------------------------

    def _deadline(self, factor: float = 1.0) -> float:
        return time.monotonic() + self.timeout * factor

    def _call(self, path: str, body: dict[str, Any], deadline: float, *, mutating: bool) -> dict[str, Any]:
        return self._gw.call(path, body, deadline=deadline, mutating=mutating)

    def _rkey(self, name: str) -> bytes:
        return self._records + check_name(name).encode()

    def _ckey(self, name: str) -> bytes:
        return self._changes + name.encode()

    def _lkey(self, name: str) -> bytes:
        return self._leases + check_lease_name(name).encode()

    def _get(self, key: bytes, deadline: float) -> tuple[Kv | None, dict[str, Any]]:
        resp = self._call("/v3/kv/range", {"key": b64(key)}, deadline, mutating=False)
        kvs = parse_kvs(resp)
        return (kvs[0] if kvs else None), resp

    def _txn(
        self,
        compare: builtins.list[dict[str, Any]],
        success: builtins.list[dict[str, Any]],
        failure: builtins.list[dict[str, Any]],
        deadline: float,
    ) -> dict[str, Any]:
        body = {"compare": compare, "success": success, "failure": failure}
        return self._call("/v3/kv/txn", body, deadline, mutating=True)

    @staticmethod
    def _put(key: bytes, value: bytes, lease: int = 0) -> dict[str, Any]:
        req: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            req["lease"] = str(lease)
        return {"request_put": req}

    @staticmethod
    def _range_op(key: bytes) -> dict[str, Any]:
        return {"request_range": {"key": b64(key)}}

    def _version_compare(self, name: str, key: bytes, expect: str, deadline: float) -> dict[str, Any]:
        """The txn compare for ``expect_version``; VersionConflict at once if it is no version of ours."""
        if expect == ABSENT:
            return {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
        if expect.isdigit() and int(expect) > 0:
            return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": expect}
        cur, _ = self._get(key, deadline)
        raise VersionConflict(name, expect, None if cur is None else str(cur.mod))

    # -- records ------------------------------------------------------------------------------

    def read(self, name: str) -> Record | None:
        return self._reads.read(name)  # a large record only when it changed (store/etcd_reads.py)

    def write(self, name: str, data: bytes, expect_version: str | None = None) -> str:
        key = self._rkey(name)
        data = bytes(data)
        deadline = self._deadline()
        compare = (
            [] if expect_version is None else [self._version_compare(name, key, expect_version, deadline)]
        )
        resp = self._txn(
            compare,
            [self._put(key, pack(data)), self._put(self._ckey(name), b"")],
            [self._range_op(key)],
            deadline,
        )
        if not resp.get("succeeded"):
            kvs = range_in(resp)
            raise VersionConflict(name, expect_version, str(kvs[0].mod) if kvs else None)
        return str(revision_of(resp))

    def delete(self, name: str, expect_version: str | None = None) -> bool:
        key = self._rkey(name)
        deadline = self._deadline()
        if expect_version == ABSENT:
            cur, _ = self._get(key, deadline)
            if cur is not None:
                raise VersionConflict(name, ABSENT, str(cur.mod))
            return False
        if expect_version is None:
            cmp = {"key": b64(key), "target": "CREATE", "result": "GREATER", "create_revision": "0"}
        else:
            cmp = self._version_compare(name, key, expect_version, deadline)
        resp = self._txn(
            [cmp],
            [{"request_delete_range": {"key": b64(key)}}, self._put(self._ckey(name), b"")],
            [self._range_op(key)],
            deadline,
        )
        if resp.get("succeeded"):
            return True
        kvs = range_in(resp)
        if expect_version is None:
            return False  # it did not exist
        raise VersionConflict(name, expect_version, str(kvs[0].mod) if kvs else None)

    def list(self, prefix: str = "") -> builtins.list[str]:
        start = self._records + prefix.encode()
        body = {"key": b64(start), "range_end": b64(prefix_end(start)), "keys_only": True}
        resp = self._call("/v3/kv/range", body, self._deadline(), mutating=False)
        n = len(self._records)
        return sorted(kv.key[n:].decode(errors="replace") for kv in parse_kvs(resp))

    def read_prefix(self, prefix: str) -> dict[str, Record]:
        """Every record whose name starts with PREFIX, in one range request (one revision).

        ``store.records.read_locations`` reads all ``locations/`` this way: one request
        where a list and a read per record were thousands, one after the other (issue #15:
        a master's full look at 2,000 locations took longer than its watchdog)."""
        start = self._records + prefix.encode()
        body = {"key": b64(start), "range_end": b64(prefix_end(start))}
        resp = self._call("/v3/kv/range", body, self._deadline(), mutating=False)
        n = len(self._records)
        return {kv.key[n:].decode(errors="replace"): record_of(kv) for kv in parse_kvs(resp)}

    def read_many(self, names: Sequence[str]) -> dict[str, Record | None]:
        return etcd_batch.read_many(self, names)  # store/etcd_batch.py: one request per 128

    def write_many(self, writes: Sequence[tuple[str, bytes, str]]) -> str:
        return etcd_batch.write_many(self, writes)  # all or none, one transaction

    def append(self, name: str, line: str) -> None:
        if "\n" in line or "\r" in line:
            raise ValueError("append: a line must not contain a newline")
        key = self._rkey(name)
        # Each request gets the usual timeout; losing races to other writers may go on
        # for CONTENTION_FACTOR timeouts in all.
        give_up = self._deadline(CONTENTION_FACTOR)
        cur, _ = self._get(key, self._deadline())
        pause = 0.001
        while True:
            old = b"" if cur is None else unpack(cur.value)
            if old and not old.endswith(b"\n"):
                old += b"\n"
            if cur is None:
                cmp = {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
            else:
                cmp = {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(cur.mod)}
            resp = self._txn(
                [cmp],
                [self._put(key, pack(old + line.encode() + b"\n")), self._put(self._ckey(name), b"")],
                [self._range_op(key)],
                min(give_up, self._deadline()),
            )
            if resp.get("succeeded"):
                return
            kvs = range_in(resp)
            cur = kvs[0] if kvs else None
            if time.monotonic() >= give_up:
                raise StoreError(f"etcd {self._gw.where}: append to '{name}': too much contention")
            time.sleep(random.uniform(0, pause))  # another writer won: back off a little
            pause = min(pause * 2, 0.02)

    def take(self, name: str) -> bytes:
        key = self._rkey(name)
        # One transaction: if the value is not empty, read it and empty it. (A missing key
        # fails a VALUE compare in etcd, so take never creates the record.)
        resp = self._txn(
            [{"key": b64(key), "target": "VALUE", "result": "NOT_EQUAL", "value": ""}],
            [self._range_op(key), self._put(key, b""), self._put(self._ckey(name), b"")],
            [],
            self._deadline(),
        )
        if not resp.get("succeeded"):
            return b""
        kvs = range_in(resp)
        return unpack(kvs[0].value) if kvs else b""

    # -- leases -------------------------------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        if not isinstance(holder, str) or not holder:
            raise ValueError("lease holder must be a non-empty string")
        if not (isinstance(ttl, int | float) and ttl > 0 and math.isfinite(ttl)):
            raise ValueError(f"lease ttl must be positive, got {ttl}")
        key = self._lkey(name)
        # SAFETY: t_send is read before anything is sent; the holder's deadline counts from it.
        t_send = self._clock()
        deadline = self._deadline()
        with self._lock:
            mine = self._held.get(name)
        kv: Kv | None
        if mine is not None and mine.holder == holder:
            kv = Kv(key, b"", mine.mod, 0)  # fast path: try to renew the revision we wrote
        else:
            kv, _ = self._get(key, deadline)
        t_seen = self._clock()
        for _ in range(4):
            if kv is None:
                cmp = {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
            else:
                if not (mine is not None and mine.holder == holder and kv.mod == mine.mod):
                    cur_holder, cur_ttl = lease_value(kv.value)
                    if cur_holder != holder and not self._expired(name, kv.mod, cur_ttl, t_seen):
                        return False
                cmp = {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(kv.mod)}
            lease_id = self._backstop(name, ttl, t_send, deadline)
            value = json.dumps({"holder": holder, "ttl": ttl}).encode()
            try:
                resp = self._txn([cmp], [self._put(key, value, lease_id)], [self._range_op(key)], deadline)
            except EtcdServerError as e:
                if _LEASE_NOT_FOUND not in str(e):
                    raise
                with self._lock:  # our etcd lease vanished (revoked elsewhere): the txn did nothing
                    self._backstops.pop(name, None)
                kv, _ = self._get(key, deadline)
                t_seen = self._clock()
                continue
            if resp.get("succeeded"):
                rev = revision_of(resp)
                with self._lock:
                    self._held[name] = Held(holder, rev, t_send, float(ttl))
                    # As the "first seen" time of our own revision t_send is safe: should
                    # another holder ask this object to take over, it waits until
                    # t_send + ttl, and we rely on it only until t0 + ttl <= t_send + ttl.
                    self._seen[name] = (rev, t_send)
                return True
            kvs = range_in(resp)
            kv = kvs[0] if kvs else None
            t_seen = self._clock()
            with self._lock:
                if mine is not None and (kv is None or kv.mod != mine.mod):
                    self._held.pop(name, None)
                mine = None
            if kv is not None and not (kv.value and lease_value(kv.value)[0] == holder):
                self._note_seen(name, kv.mod, t_seen)
                return False  # somebody else won the race
        raise StoreError(f"etcd {self._gw.where}: lease '{name}' changed under every attempt")

    def _note_seen(self, name: str, mod: int, t_seen: float) -> tuple[int, float]:
        with self._lock:
            prev = self._seen.get(name)
            if prev is None or prev[0] != mod:
                prev = self._seen[name] = (mod, t_seen)
            return prev

    def _expired(self, name: str, mod: int, ttl: float, t_seen: float) -> bool:
        """True once revision ``mod`` of the lease key stayed unchanged for ``ttl`` s of our clock.

        SAFETY: the first time we saw ``mod`` is after it was committed, hence after its
        writer's t0; the writer relies on it until t0 + ttl at most.
        """
        _, first = self._note_seen(name, mod, t_seen)
        return self._clock() >= first + ttl

    def _backstop(self, name: str, ttl: float, t_send: float, deadline: float) -> int:
        """An etcd lease of ours that etcd keeps at least BACKSTOP_MARGIN beyond t_send + ttl."""
        need = t_send + ttl + BACKSTOP_MARGIN
        with self._lock:
            cur = self._backstops.get(name)
        if cur is not None and cur.bound >= need:
            return cur.lease_id
        if cur is not None:
            # SAFETY: the server's new expiry is at least (when it got the request) + TTL, and
            # that is after t_ka: count from the send, never from the answer.
            t_ka = self._clock()
            resp = self._call("/v3/lease/keepalive", {"ID": str(cur.lease_id)}, deadline, mutating=False)
            granted = int((resp.get("result") or {}).get("TTL", 0))
            if granted > 0 and t_ka + granted >= need:
                with self._lock:
                    self._backstops[name] = Backstop(cur.lease_id, granted, t_ka + granted)
                return cur.lease_id
        want = math.ceil(ttl) + BACKSTOP_SLACK
        t_grant = self._clock()
        resp = self._call("/v3/lease/grant", {"TTL": want}, deadline, mutating=False)
        lease_id, granted = int(resp.get("ID", 0)), int(resp.get("TTL", 0))
        if not lease_id or t_grant + granted < need:
            raise StoreError(f"etcd {self._gw.where}: lease grant answered {resp!r}")
        with self._lock:
            self._backstops[name] = Backstop(lease_id, granted, t_grant + granted)
        return lease_id

    def release_lease(self, name: str, holder: str) -> bool:
        key = self._lkey(name)
        deadline = self._deadline()
        kv, _ = self._get(key, deadline)
        for _ in range(4):
            if kv is None or lease_value(kv.value)[0] != holder:
                return False
            cmp = {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(kv.mod)}
            resp = self._txn(
                [cmp], [{"request_delete_range": {"key": b64(key)}}], [self._range_op(key)], deadline
            )
            if resp.get("succeeded"):
                with self._lock:
                    self._held.pop(name, None)
                    self._seen.pop(name, None)
                    mine = self._backstops.pop(name, None)
                if mine is not None:
                    self._revoke(mine.lease_id, deadline)
                return True
            kvs = range_in(resp)
            kv = kvs[0] if kvs else None
        return False

    def _revoke(self, lease_id: int, deadline: float) -> None:
        # Best effort: an etcd lease that is not revoked expires by itself.
        with contextlib.suppress(StoreError):
            self._call("/v3/lease/revoke", {"ID": str(lease_id)}, deadline, mutating=False)

    def lease_info(self, name: str) -> LeaseInfo | None:
        kv, _ = self._get(self._lkey(name), self._deadline())
        now = self._clock()
        if kv is None:
            with self._lock:
                self._seen.pop(name, None)
            return None
        holder, ttl = lease_value(kv.value)
        with self._lock:
            mine = self._held.get(name)
        if mine is not None and mine.mod == kv.mod:
            remaining = mine.t_send + mine.ttl - now
        else:
            _, first = self._note_seen(name, kv.mod, now)
            remaining = first + ttl - now
        if remaining <= 0:
            return None
        return LeaseInfo(holder or "?", remaining)

    # -- change notification ------------------------------------------------------------------

    def changed_since(self, token: str | None) -> Changes:
        start = self._changes
        body: dict[str, Any] = {"key": b64(start), "range_end": b64(prefix_end(start)), "keys_only": True}
        since = _parse_token(token)
        if since is None:
            body["count_only"] = True
        else:
            body["min_mod_revision"] = str(since[1] + 1)
        resp = self._call("/v3/kv/range", body, self._deadline(), mutating=False)
        header = resp.get("header") or {}
        cluster_id, rev = str(header.get("cluster_id", "0")), int(header.get("revision", 0))
        new_token = f"{cluster_id}:{rev}"
        if since is None or since[0] != cluster_id or since[1] > rev:
            return Changes(new_token, None)
        n = len(start)
        return Changes(new_token, frozenset(kv.key[n:].decode(errors="replace") for kv in parse_kvs(resp)))


def _parse_token(token: str | None) -> tuple[str, int] | None:
    if token is None:
        return None
    cluster_id, sep, rev = token.partition(":")
    if not sep or not rev.isdigit():
        return None
    return cluster_id, int(rev)
