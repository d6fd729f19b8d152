"""A master round's location reads and moves, batched on a store that can (etcd).

Issue #15: recovering a fenced node's 100 services on a 20-node etcd cluster
read each location and moved it with requests one after the other, about 100 ms
each on a loaded host: a 21.7 s round before the first service could start. On a
store with ``read_many``/``write_many`` (store/etcd_batch.py) the master instead

* reads the locations of all the services it recovers in the round at once
  (:meth:`RoundMoves.prefetch`, from ``Manager.manage`` via
  ``Env.prefetch_locations``), each record used for that service's look and move
  and at most ``max_age`` seconds old;
* queues each move (:meth:`RoundMoves.queue`) and commits the round's moves
  before anything that depends on them: before the round's ``manager_status``
  write (the LRMs act on that write) and before any read of a moved location.

SAFETY: every move is a compare-and-swap on the version of the record it was
decided on, so a location that changed meanwhile is never moved over. The
Manager has already applied a queued move to its in-memory state; a move that
does not land makes :meth:`RoundMoves.commit` raise :class:`LockLost`, the master
steps down without writing ``manager_status``, and its next term starts from the
records (in which the move did not happen).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ha.errors import LockLost
from store import records as rec
from store.base import ABSENT, Record, StoreError, VersionConflict


class BatchStore(Protocol):
    def read(self, name: str) -> Record | None: ...

    def write(self, name: str, data: bytes, expect_version: str | None = None) -> str: ...

    def read_many(self, names: Sequence[str]) -> dict[str, Record | None]: ...

    def write_many(self, writes: Sequence[tuple[str, bytes, str]]) -> str: ...


def batches(store: object) -> BatchStore | None:
    """The store as a batching one, or None (the dir store: its reads are cached, and its
    moves of a round are already synced and announced together, DirStore.deferring)."""
    if callable(getattr(store, "read_many", None)) and callable(getattr(store, "write_many", None)):
        return store  # type: ignore[return-value]
    return None


@dataclass(frozen=True, slots=True)
class Move:
    sid: str
    data: bytes  # the new location record: its node and a new fencing token
    expect: str


class RoundMoves:
    def __init__(self, max_age: float, batch: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age = max_age
        self.batch = batch  # moves per write_many (store/etcd_batch.py MAX_WRITES)
        self.clock = clock
        self._seen: dict[str, tuple[Record | None, float]] = {}  # sid -> (record, read at)
        self._queued: dict[str, Move] = {}

    def prefetch(self, store: BatchStore, sids: Iterable[str]) -> None:
        """Read the location records of SIDS (those not queued) in one go."""
        want = [sid for sid in sids if sid not in self._queued]
        if not want:
            return
        got = store.read_many([rec.location_name(sid) for sid in want])
        now = self.clock()
        for sid in want:
            self._seen[sid] = (got.get(rec.location_name(sid)), now)

    def seen(self, sid: str) -> tuple[bool, Record | None]:
        """(True, record) when SID's record was prefetched at most ``max_age`` s ago (it
        serves one look); (False, None) otherwise."""
        entry = self._seen.pop(sid, None)
        if entry is None or self.clock() - entry[1] >= self.max_age:
            return False, None
        return True, entry[0]

    def pending(self, sid: str) -> bool:
        return sid in self._queued

    def __bool__(self) -> bool:
        return bool(self._queued)

    def queue(self, sid: str, data: bytes, expect: str) -> None:
        self._queued[sid] = Move(sid, data, expect)

    def discard(self) -> None:
        """A new term, or no longer master: nothing read or queued before counts."""
        self._seen.clear()
        self._queued.clear()

    def commit(self, store: BatchStore) -> None:
        """Write every queued move; raises LockLost unless every one landed (see the module doc)."""
        moves, self._queued = list(self._queued.values()), {}
        self._seen.clear()  # records read before the moves are not the records any more
        failed: list[str] = []
        for start in range(0, len(moves), self.batch):
            chunk = moves[start : start + self.batch]
            try:
                store.write_many([(rec.location_name(m.sid), m.data, m.expect) for m in chunk])
            except (VersionConflict, StoreError):
                # one of them moved meanwhile, or the outcome is unknown: each on its own
                failed += [m.sid for m in chunk if not _one(store, m)]
        if failed:
            shown = ", ".join(failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
            raise LockLost(f"the round's moves of {shown} did not land: starting again from the records")


def _one(store: BatchStore, move: Move) -> bool:
    """A move of a batch that did not land (or may have): True once it is in place."""
    name = rec.location_name(move.sid)
    try:
        cur = store.read(name)
        if cur is not None and cur.data == move.data:
            return True  # the batch landed after all
        if (cur.version if cur is not None else ABSENT) != move.expect:
            return False  # moved by someone else: not ours to move over
        store.write(name, move.data, move.expect)
        return True
    except (VersionConflict, StoreError):
        return False
