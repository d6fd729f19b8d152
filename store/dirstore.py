"""The ``dir`` store backend: a folder shared by the nodes of ONE host.

Layout under the root (names as in ARCHITECTURE.md)::

    resources.cfg, groups.cfg, rules.cfg, datacenter.cfg, nodes.cfg,
    manager_status, crm_commands, nodes/<node>/lrm_status, locations/<sid>
    locks/<lease>          one JSON file per lease (holder, boot id, expiry)
    .pyha/locks/*          flock(2) lock files, one per record / lease
    .pyha/journal          change log for changed_since (a hint, not data)

Guarantees:

* A write is atomic and durable before it returns: temp file in the same
  directory, write, fsync, rename over the old file, fsync the directory.
  A crash at any point leaves the old or the new file, never a torn one.
  Inside :meth:`DirStore.deferring` (the master's recovery of many services,
  each a location move) writes are atomic and visible at once but made
  durable together: by the next write outside it (its fsyncs come first), so
  a write that depends on them never outlives them in a power cut.
  Readers take no lock; they open the current file, which is complete.
  With ``deferring(notes=True)`` (the master's recovery round) the journal
  notes of those writes wait for the same barrier (see :meth:`DirStore.deferring`).
* Read-modify-write operations (CAS, append, take, delete, leases) hold an
  exclusive ``flock`` on the record's own lock file, so they are atomic
  across threads and processes. A lock held longer than ``lock_timeout``
  (a stuck process) raises :class:`StoreError` instead of blocking forever.
* Leases use CLOCK_BOOTTIME, which is one clock for every process of a
  host, does not jump with the wall clock and keeps counting while the host
  is suspended (a resumed holder sees its lease expired, as everyone else
  does), plus the kernel boot id: a lease written during an earlier boot is
  expired. SAFETY: this is only
  sound while every node of the cluster runs on this host; across hosts
  boot clocks are unrelated (use the etcd backend there).
* Versions are content digests (BLAKE2b-128): equal version <=> equal
  bytes, so a CAS means "still the bytes I read".
* Reads are cached per store object (issue #17: an LRM read the whole
  ``manager_status`` of thousands of services, and hashed it, several times a
  second). A cached record is used only while the journal has not changed
  (same inode and size: one ``stat``) and for at most ``READ_CACHE_MAX_AGE``
  seconds. Every write through any store object appends to the journal
  before it returns, so a read that starts after a write returned sees it
  (reads stay linearizable); a file changed behind the store's back (an
  editor, a failed journal append) is seen within ``READ_CACHE_MAX_AGE``.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from fence.clock import boottime
from fence.procfs import read_boot_id
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
from store.inotify import DirWatch

INTERNAL: Final = ".pyha"
LEASE_DIR: Final = "locks"
JOURNAL_LIMIT: Final = 256 * 1024
LEASE_RECORD_SIZE: Final = 256  # bytes: a renewal rewrites the lease file in place, padded to this
READ_CACHE_MAX_AGE: Final = 2.0  # s: the longest a cached read is trusted without re-reading


def version_of(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirStore:
    """:class:`store.base.Store` on a local folder (see the module doc for guarantees)."""

    def __init__(
        self,
        root: str | Path,
        *,
        boot_id: str | None = None,
        clock: Callable[[], float] = boottime,
        lock_timeout: float = 5.0,
    ) -> None:
        self.root = Path(root).absolute()
        # boot_id and clock are injectable for tests only; the defaults are the safe ones.
        self.boot_id = boot_id if boot_id is not None else read_boot_id()
        self._clock = clock
        self._lock_timeout = lock_timeout
        self._locks = self.root / INTERNAL / "locks"
        self._journal = self.root / INTERNAL / "journal"
        # name -> (journal (inode, size) before the read, monotonic time of the read, record)
        self._cache: dict[str, tuple[tuple[int, int], float, Record | None]] = {}
        self._deferring = threading.local()  # this thread's writes wait for the next barrier
        self._unsynced: dict[Path, None] = {}  # files written under deferring(), in order
        self._unnoted: dict[str, None] = {}  # records written under deferring(notes=True)
        self._unsynced_lock = threading.Lock()
        try:
            self._ensure_dir(self._locks)
            self._ensure_dir(self.root / LEASE_DIR)
            with self._locked("j.journal"):
                fd = os.open(self._journal, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
                os.close(fd)
        except OSError as e:
            raise StoreError(f"cannot open dir store at {self.root}: {e}") from e

    @property
    def url(self) -> str:
        return f"dir:{self.root}"

    def close(self) -> None:
        """Nothing stays open between calls; writes still deferred are synced and noted."""
        with contextlib.suppress(OSError, StoreError):
            self.sync_deferred()

    # -- plumbing ---------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        check_name(name)
        if name == LEASE_DIR or name.startswith(LEASE_DIR + "/"):
            raise ValueError(f"record name {name!r} is in the reserved '{LEASE_DIR}/' namespace")
        return self.root / name

    def _ensure_dir(self, path: Path) -> None:
        """mkdir -p, fsyncing each parent that got a new entry (a new dir must survive a crash)."""
        missing: list[Path] = []
        p = path
        while not p.is_dir():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            try:
                os.mkdir(d, 0o700)
            except FileExistsError:
                continue
            _fsync_dir(d.parent)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """Exclusive flock on ``.pyha/locks/<key>``, polled up to ``lock_timeout``."""
        fd = os.open(self._locks / key, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            deadline = time.monotonic() + self._lock_timeout
            pause = 0.0005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StoreError(
                            f"store lock '{key}' busy for more than {self._lock_timeout}s"
                        ) from None
                    time.sleep(pause)
                    pause = min(pause * 2, 0.01)
            yield  # the lock goes with the fd at close
        finally:
            os.close(fd)

    @staticmethod
    def _lock_key(kind: str, name: str) -> str:
        return f"{kind}.{name.replace('/', '%')}"

    @contextlib.contextmanager
    def deferring(self, notes: bool = False) -> Iterator[None]:
        """Writes of this thread inside are made durable by the next write outside (see above).

        A recovery round moves the location of every service of a dead node: each move
        a write with two fsyncs, one after the other (issue #15: 100 services, 2 s of
        the failover). Here they are written at once and synced together before the
        round's manager_status write, which depends on them.

        ``notes``: their journal notes wait for that barrier too, and go in one append.
        Each note wakes every node's store watcher (and, for a location, every daemon
        reading locations): at 20 nodes a recovery round of 100 moves woke 2,000 of
        them one after the other, on two cores, while the master was still moving.
        Until the barrier the files are in place (a read of the file sees them) but
        other store objects may still serve a cached copy, up to ``READ_CACHE_MAX_AGE``;
        this object's own cache holds what it wrote. Only for a writer whose readers
        act on a later write (the master: the LRMs act on its manager_status, written
        after the barrier); never for a move another node checks at once (a live
        migration's commit, which the target reads before it resumes the guest).
        """
        before = (getattr(self._deferring, "on", False), getattr(self._deferring, "notes", False))
        self._deferring.on = True
        self._deferring.notes = notes or before[1]
        try:
            yield
        finally:
            self._deferring.on, self._deferring.notes = before

    def sync_deferred(self) -> None:
        """Make every write done under :meth:`deferring` durable, then append their deferred
        journal notes (a no-op when there is none)."""
        with self._unsynced_lock:
            if self._unsynced:
                self._sync_unsynced()
            if self._unnoted:
                names = list(self._unnoted)
                self._unnoted = {}  # a failed append: the readers' caches age out, as for any note
                self._note_quietly(*names)

    def _sync_unsynced(self) -> None:
        """fsync the files written under :meth:`deferring` and their folders (``_unsynced_lock`` held)."""
        paths = list(self._unsynced)
        for path in paths:  # after the first, each finds its data on disk already
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # deleted since: its delete synced its folder
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for d in dict.fromkeys(p.parent for p in paths):
            _fsync_dir(d)
        self._unsynced = {}  # only once all of it is on disk: a failure leaves it to the next

    def _replace(self, path: Path, data: bytes, *, durable: bool = True) -> None:
        """Atomically put ``data`` at ``path`` (caller holds the record lock)."""
        if durable and getattr(self._deferring, "on", False):
            self._write_renamed(path, data, durable=False)
            with self._unsynced_lock:
                self._unsynced[path] = None
            return
        if durable:
            # SAFETY: what was written under deferring() becomes durable before anything
            # written after it (a write may depend on it: manager_status on the moves).
            self.sync_deferred()
        self._write_renamed(path, data, durable=durable)

    def _write_renamed(self, path: Path, data: bytes, *, durable: bool) -> None:
        self._ensure_dir(path.parent)
        self._remove_stale_temps(path)
        tmp = path.parent / f".{path.name}.tmp.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            # SAFETY: rename is the commit point; before it readers see the old file.
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if durable:
            # SAFETY: without this fsync the rename itself may be lost in a power cut,
            # and an acknowledged write would silently roll back.
            _fsync_dir(path.parent)

    @staticmethod
    def _remove_stale_temps(path: Path) -> None:
        """Drop temp files of writers of this record that died before their rename.

        Only called under the record lock, so no live writer owns them.
        """
        prefix = f".{path.name}.tmp."
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(path.parent):
                if entry.name.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)

    @staticmethod
    def _read_bytes(path: Path) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            return None

    def _note(self, *names: str) -> None:
        """Append ``names`` to the change journal, in one write (a hint: not fsynced)."""
        with self._locked("j.journal"):
            fd = os.open(self._journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, b"".join(n.encode() + b"\n" for n in names))
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            if size > JOURNAL_LIMIT:
                # A new inode: tokens of the old journal answer "unknown, re-read all".
                self._replace(self._journal, b"", durable=False)

    def _io(self, what: str, name: str, e: OSError) -> StoreError:
        return StoreError(f"dir store {self.root}: cannot {what} '{name}': {e.strerror or e}")

    # -- records ------------------------------------------------------------------------

    def read(self, name: str) -> Record | None:
        path = self._path(name)
        mark = self._journal_mark()
        now = time.monotonic()
        hit = self._cache.get(name)
        if hit is not None and mark is not None and hit[0] == mark and now - hit[1] < READ_CACHE_MAX_AGE:
            return hit[2]
        try:
            data = self._read_bytes(path)
        except OSError as e:
            raise self._io("read", name, e) from e
        record = None if data is None else Record(data, version_of(data))
        if mark is None:
            self._cache.pop(name, None)
        else:
            # The mark was taken before the read: a write that lands meanwhile moves the
            # journal past it, so the next read looks again.
            self._cache[name] = (mark, now, record)
        return record

    def change_mark(self) -> tuple[int, int] | None:
        """Equal marks: no record was written through any store object in between (None: unknown)."""
        return self._journal_mark()

    def _journal_mark(self) -> tuple[int, int] | None:
        """The journal's (inode, size): unchanged means no write through any store object since."""
        try:
            st = os.stat(self._journal)
        except OSError:
            return None
        return st.st_ino, st.st_size

    def write(self, name: str, data: bytes, expect_version: str | None = None) -> str:
        path = self._path(name)
        data = bytes(data)
        version = version_of(data)
        try:
            with self._locked(self._lock_key("r", name)):
                if expect_version is not None:
                    self._check_version(name, path, expect_version)
                self._replace(path, data)
                if getattr(self._deferring, "notes", False):
                    # noted at the barrier (deferring); meanwhile this object reads its own write
                    # (under the record's lock: no other write of it can come between)
                    mark = self._journal_mark()
                    if mark is not None:
                        self._cache[name] = (mark, time.monotonic(), Record(data, version))
                    with self._unsynced_lock:
                        self._unnoted[name] = None
                    return version
        except OSError as e:
            raise self._io("write", name, e) from e
        self._note_quietly(name)
        return version

    def _check_version(self, name: str, path: Path, expect: str) -> None:
        cur = self._read_bytes(path)
        actual = None if cur is None else version_of(cur)
        ok = actual is None if expect == ABSENT else actual == expect
        if not ok:
            raise VersionConflict(name, expect, actual)

    def _note_quietly(self, *names: str) -> None:
        # The data is committed; a failing journal only delays watchers to their full re-read.
        with contextlib.suppress(OSError, StoreError):
            self._note(*names)

    def delete(self, name: str, expect_version: str | None = None) -> bool:
        path = self._path(name)
        try:
            with self._locked(self._lock_key("r", name)):
                if expect_version is not None:
                    self._check_version(name, path, expect_version)
                self.sync_deferred()
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    return False
                _fsync_dir(path.parent)
        except OSError as e:
            raise self._io("delete", name, e) from e
        self._note_quietly(name)
        return True

    def list(self, prefix: str = "") -> builtins.list[str]:
        # Start at the deepest folder the prefix names, so list("nodes/") walks only nodes/.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = base.split("/", 1)[0]
        if top.startswith(".") or top == LEASE_DIR:
            return []  # internal files and leases are not records
        start = self.root / base if base else self.root
        out: builtins.list[str] = []
        try:
            for dirpath, dirnames, filenames in os.walk(start):
                rel = os.path.relpath(dirpath, self.root)
                rel = "" if rel == "." else rel + "/"
                dirnames[:] = [
                    d for d in dirnames if not d.startswith(".") and not (rel == "" and d == LEASE_DIR)
                ]
                for fn in filenames:
                    full = rel + fn
                    if not fn.startswith(".") and full.startswith(prefix):
                        out.append(full)
        except OSError as e:
            raise self._io("list", prefix, e) from e
        return sorted(out)

    def append(self, name: str, line: str) -> None:
        if "\n" in line or "\r" in line:
            raise ValueError("append: a line must not contain a newline")
        path = self._path(name)
        try:
            with self._locked(self._lock_key("r", name)):
                cur = self._read_bytes(path) or b""
                if cur and not cur.endswith(b"\n"):
                    cur += b"\n"
                # Whole-file replace rather than O_APPEND: a crash never leaves half a line.
                self._replace(path, cur + line.encode() + b"\n")
        except OSError as e:
            raise self._io("append to", name, e) from e
        self._note_quietly(name)

    def take(self, name: str) -> bytes:
        path = self._path(name)
        try:
            with self._locked(self._lock_key("r", name)):
                cur = self._read_bytes(path)
                if not cur:
                    return b""
                self._replace(path, b"")
        except OSError as e:
            raise self._io("take", name, e) from e
        self._note_quietly(name)
        return cur

    # -- leases ---------------------------------------------------------------------------

    def _lease_path(self, name: str) -> Path:
        return self.root / LEASE_DIR / check_lease_name(name)

    def _load_lease(self, path: Path) -> dict[str, Any] | None:
        """The lease record if it is live (this boot, not expired), else None."""
        raw = self._read_bytes(path)
        if raw is None:
            return None
        try:
            d = json.loads(raw)
            holder, boot, expires = d["holder"], d["boot_id"], float(d["expires"])
        except (ValueError, KeyError, TypeError):
            # SAFETY: lease files are created by atomic rename and renewed in place under the
            # lease's lock, and every reader holds that lock, so a garbled one can only come
            # from a crash of the whole host, i.e. an earlier boot: it is expired.
            return None
        if not isinstance(holder, str) or boot != self.boot_id:
            return None  # SAFETY: monotonic times of another boot mean nothing now
        if expires <= self._clock():
            return None
        return {"holder": holder, "expires": expires}

    def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        if not holder:
            raise ValueError("lease holder must be a non-empty string")
        if not ttl > 0:
            raise ValueError(f"lease ttl must be positive, got {ttl}")
        path = self._lease_path(name)
        try:
            with self._locked(self._lock_key("l", name)):
                live = self._load_lease(path)
                if live is not None and live["holder"] != holder:
                    return False
                # SAFETY: the expiry is computed from a clock read taken after the caller's
                # own t0 (we are inside the call), so the stored expiry is never earlier than
                # the caller's t0 + ttl: nobody can take over while the caller still relies on it.
                now = self._clock()
                rec = {"holder": holder, "boot_id": self.boot_id, "expires": now + ttl, "ttl": ttl}
                data = json.dumps(rec).encode().ljust(LEASE_RECORD_SIZE)
                # Not fsynced: after a host crash the boot id changes and every lease is void anyway.
                # A renewal overwrites the record in place (issue #17: a rename per renewal, twice a
                # second on every node, cost more than the rest of an LRM's iteration at rest).
                if not self._overwrite(path, data):
                    self._replace(path, data, durable=False)
                return True
        except OSError as e:
            raise self._io("acquire lease", name, e) from e

    def release_lease(self, name: str, holder: str) -> bool:
        path = self._lease_path(name)
        try:
            with self._locked(self._lock_key("l", name)):
                raw = self._read_bytes(path)
                if raw is None:
                    return False
                try:
                    d = json.loads(raw)
                    mine = d.get("holder") == holder and d.get("boot_id") == self.boot_id
                except (ValueError, AttributeError):
                    mine = False
                if not mine:
                    return False
                os.unlink(path)
                return True
        except OSError as e:
            raise self._io("release lease", name, e) from e

    @staticmethod
    def _overwrite(path: Path, data: bytes) -> bool:
        """Write ``data`` over a file of exactly its size (False: not done, replace it instead)."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            return os.fstat(fd).st_size == len(data) and os.pwrite(fd, data, 0) == len(data)
        finally:
            os.close(fd)

    def lease_info(self, name: str) -> LeaseInfo | None:
        path = self._lease_path(name)
        try:
            with self._locked(self._lock_key("l", name)):  # a renewal writes in place: no torn read
                live = self._load_lease(path)
        except OSError as e:
            raise self._io("read lease", name, e) from e
        if live is None:
            return None
        return LeaseInfo(live["holder"], max(0.0, live["expires"] - self._clock()))

    # -- change notification ---------------------------------------------------------------

    def watch(self) -> DirWatch | None:
        """A wake-up on every record write (inotify on the journal), or None without inotify."""
        return DirWatch.open(self.root / INTERNAL)

    def changed_since(self, token: str | None) -> Changes:
        try:
            fd = os.open(self._journal, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return Changes("0:0", None)
        except OSError as e:
            raise self._io("read", "journal", e) from e
        try:
            st = os.fstat(fd)
            ino, size = st.st_ino, st.st_size
            start = _parse_token(token, ino)
            if start is None or start > size:
                return Changes(f"{ino}:{size}", None)
            chunk = os.pread(fd, size - start, start) if size > start else b""
        except OSError as e:
            raise self._io("read", "journal", e) from e
        finally:
            os.close(fd)
        end = chunk.rfind(b"\n") + 1  # only whole lines; a line being written waits for next time
        names = frozenset(n.decode(errors="replace") for n in chunk[:end].split(b"\n") if n)
        return Changes(f"{ino}:{start + end}", names)


def _parse_token(token: str | None, ino: int) -> int | None:
    if token is None:
        return None
    try:
        t_ino, t_off = token.split(":", 1)
        if int(t_ino) != ino:
            return None
        return int(t_off)
    except ValueError:
        return None
