"""A large record is sent by etcd only when it changed: :class:`ReadCache` (issue #15).

At 20 nodes / 2,000 services every node's LRM read the whole ``manager_status``
(20-30 KB stored, 200 KB once unpacked) and ``resources.cfg`` several times a
second, each time over the wire, base64 in JSON, and decompressed, although they
change only when the master or an operator writes. A record of
:data:`MIN_SIZE` bytes or more that this store read before is read again with one
read-only transaction: "if its mod_revision is still the one I have, nothing;
else the record". It is the same single linearizable request as a plain read (a
read-only transaction is served like a range, without a raft entry); only the
record's bytes are left out when they did not change.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Final

from store.base import Record
from store.etcd_gateway import b64
from store.etcd_kv import parse_kvs, range_in
from store.etcd_pack import record_of

if TYPE_CHECKING:
    from store.etcdstore import EtcdStore

MIN_SIZE: Final = 4096  # bytes of a record (as read) worth keeping


class ReadCache:
    def __init__(self, store: EtcdStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._last: dict[str, Record] = {}  # name -> the large record as last read

    def read(self, name: str) -> Record | None:
        st = self._store
        key = st._rkey(name)
        deadline = st._deadline()
        with self._lock:
            last = self._last.get(name)
        if last is None:
            resp = st._call("/v3/kv/range", {"key": b64(key)}, deadline, mutating=False)
            kvs = parse_kvs(resp)
        else:
            # a missing key's mod_revision is 0: never equal, the failure branch says it is gone
            cmp = {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": last.version}
            body = {"compare": [cmp], "success": [], "failure": [st._range_op(key)]}
            resp = st._call("/v3/kv/txn", body, deadline, mutating=False)
            if resp.get("succeeded"):
                return last
            kvs = range_in(resp)
        record = record_of(kvs[0]) if kvs else None
        with self._lock:
            if record is not None and len(record.data) >= MIN_SIZE:
                self._last[name] = record
            else:
                self._last.pop(name, None)
        return record


__all__ = ["MIN_SIZE", "ReadCache"]
