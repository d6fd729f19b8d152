"""Many records in one etcd request: :meth:`EtcdStore.read_many` and :meth:`EtcdStore.write_many`.

Issue #15: a master recovering the 100 services of a fenced node on a 20-node
cluster read and moved each location record with requests one after the other
(about 100 ms each on a loaded host): a 21.7 s round. A transaction carries up
to etcd's ``--max-txn-ops`` operations (128 by default) in each of its lists, so
the round's reads go as transactions of range operations and its moves as
transactions of compare-and-swaps, :data:`MAX_WRITES` moves each.

A ``write_many`` is one transaction: every write lands, or none (a compare
that fails, or an unknown outcome, leaves the caller to find out which one, as
a single write's would).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from store.base import Record, VersionConflict
from store.etcd_kv import parse_kvs, revision_of
from store.etcd_pack import pack, record_of

if TYPE_CHECKING:
    from store.etcdstore import EtcdStore

# etcd's default --max-txn-ops is 128 operations per list of a transaction
MAX_TXN_OPS: Final = 128
# a write is two puts (the record and its changes/ key) and one compare
MAX_WRITES: Final = MAX_TXN_OPS // 2


def read_many(store: EtcdStore, names: Sequence[str]) -> dict[str, Record | None]:
    """Each name's record (None: absent), in read-only transactions of up to 128 ranges each.

    A read-only transaction is served like a range request (linearizable, no raft
    entry); all the records of one transaction are of one revision.
    """
    out: dict[str, Record | None] = {}
    n = len(store._records)
    for start in range(0, len(names), MAX_TXN_OPS):
        chunk = names[start : start + MAX_TXN_OPS]
        ops = [store._range_op(store._rkey(name)) for name in chunk]
        body = {"compare": [], "success": ops, "failure": []}
        resp = store._call("/v3/kv/txn", body, store._deadline(), mutating=False)
        for name in chunk:
            out[name] = None
        for answer in resp.get("responses", []) or []:
            for kv in parse_kvs(answer.get("response_range", {}) or {}):
                out[kv.key[n:].decode(errors="replace")] = record_of(kv)
    return out


def write_many(store: EtcdStore, writes: Sequence[tuple[str, bytes, str]]) -> str:
    """Write every ``(name, data, expect_version)`` in one transaction, or none of them.

    At most :data:`MAX_WRITES` writes (ValueError beyond). Raises
    :class:`VersionConflict` (for the first name) when any compare failed: nothing
    was written; :class:`StoreError` when the outcome is unknown. Returns the
    revision of the transaction (every record's new version).
    """
    if len(writes) > MAX_WRITES:
        raise ValueError(f"write_many: at most {MAX_WRITES} writes in one transaction, got {len(writes)}")
    if not writes:
        return ""
    deadline = store._deadline()
    compare: list[dict[str, Any]] = []
    success: list[dict[str, Any]] = []
    for name, data, expect in writes:
        key = store._rkey(name)
        compare.append(store._version_compare(name, key, expect, deadline))
        success += [store._put(key, pack(bytes(data))), store._put(store._ckey(name), b"")]
    resp = store._txn(compare, success, [], deadline)
    if not resp.get("succeeded"):
        name, _, expect = writes[0]
        raise VersionConflict(name, expect, None)
    return str(revision_of(resp))


__all__ = ["MAX_TXN_OPS", "MAX_WRITES", "read_many", "write_many"]
