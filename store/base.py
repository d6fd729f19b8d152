"""The Store port: durable named records and leases (ARCHITECTURE.md "Messages and records").

Every backend (``dir`` for one host, ``etcd`` for many) implements
:class:`Store` and passes the shared contract suite in ``tests/store/contract.py``.

Records are opaque bytes under a name such as ``manager_status``,
``nodes/<node>/lrm_status`` or ``locations/<sid>``; the typed layer on top is
``store/records.py``. Leases are a separate namespace of names such as
``ha_manager_lock`` and ``ha_agent_<node>_lock``.
"""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

from ha.errors import CfsError, HaError

# ``expect_version=ABSENT`` asks for "create, only if the record does not exist".
ABSENT: Final[str] = ""

# Record and lease names: '/'-separated segments; a segment never starts with '.'
# (reserved for temporary and internal files of the dir backend).
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_.:@+=,-]{0,199}"
NAME_RE: Final = re.compile(rf"^{_SEGMENT}(/{_SEGMENT}){{0,7}}$")
LEASE_NAME_RE: Final = re.compile(rf"^{_SEGMENT}$")


class StoreError(CfsError):
    """The store cannot be read or written right now (I/O error, lock busy too long)."""


class VersionConflict(HaError):
    """A compare-and-swap found another version than the one expected."""

    def __init__(self, name: str, expected: str | None, actual: str | None) -> None:
        self.name = name
        self.expected = expected
        self.actual = actual
        want = "absent" if expected == ABSENT else expected
        have = "absent" if actual is None else actual
        super().__init__(f"record '{name}' changed concurrently (expected version {want}, found {have})")


@dataclass(frozen=True, slots=True)
class Record:
    """The bytes of a record and its version.

    A version is an opaque non-empty string; two reads return the same version
    only if they returned the same bytes. Pass it back as ``expect_version``.
    """

    data: bytes
    version: str


class LeaseInfo(NamedTuple):
    """A live lease: who holds it and how many seconds it still has."""

    holder: str
    remaining: float


class Changes(NamedTuple):
    """Answer of :meth:`Store.changed_since`.

    ``names`` is the set of record names written, appended, taken or deleted
    since the token, or ``None`` when the backend cannot tell (first call, or
    its change log was compacted): then re-read everything you care about.
    """

    token: str
    names: frozenset[str] | None


class ChangeWatch(Protocol):
    """A wake-up on record changes: ``Store.watch()`` of backends that push them.

    The dir store's is inotify on its journal (``store/inotify.py``), the etcd
    store's an etcd watch (``store/etcd_watch.py``). Register ``fd`` in a poller or
    call :meth:`wait`; after a wake-up ask :meth:`Store.changed_since` what changed.
    """

    fd: int

    @property
    def live(self) -> bool:
        """True while changes are pushed; False: the push is down, poll as without a watch."""
        ...

    @property
    def safety_poll(self) -> float:
        """Seconds between two reads a subscriber still makes while ``live`` (a lost wake-up)."""
        ...

    def wait(self, timeout: float) -> bool:
        """Sleep until a change (or a change of ``live``): True, or ``timeout`` s passed: False."""
        ...

    def close(self) -> None: ...


def open_watch(store: object) -> ChangeWatch | None:
    """The store's change watch (its ``watch()``, through wrappers), or None: poll it."""
    watch = getattr(store, "watch", None)
    return watch() if callable(watch) else None


class Store(Protocol):
    """Durable records and leases shared by the nodes of one cluster."""

    # records ---------------------------------------------------------------------
    def read(self, name: str) -> Record | None:
        """The current record, or None when it does not exist."""
        ...

    def write(self, name: str, data: bytes, expect_version: str | None = None) -> str:
        """Replace the record atomically and durably; return its new version.

        With ``expect_version`` the write is a compare-and-swap: it raises
        :class:`VersionConflict` unless the current version equals it
        (:data:`ABSENT`: the record must not exist). When this returns, the
        write survives a crash of the writer (and, for durable backends, of
        the machine); a reader sees the old or the new bytes, never a mix.
        """
        ...

    def delete(self, name: str, expect_version: str | None = None) -> bool:
        """Remove the record; True if it existed. CAS like :meth:`write`."""
        ...

    def list(self, prefix: str = "") -> builtins.list[str]:
        """Sorted names of the existing records that start with ``prefix``."""
        ...

    def append(self, name: str, line: str) -> None:
        """Atomically add ``line`` (no newline inside) as a line at the end of the record."""
        ...

    def take(self, name: str) -> bytes:
        """Atomically return the record's bytes and leave it empty (queue drain)."""
        ...

    # leases ----------------------------------------------------------------------
    def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Create, renew (held by ``holder``) or take over (expired) the lease for ``ttl`` s.

        SAFETY: a caller that read its clock at ``t0`` just before a successful
        call may count on the lease until ``t0 + ttl`` and not a moment longer;
        nobody else can acquire it before that instant.
        """
        ...

    def release_lease(self, name: str, holder: str) -> bool:
        """Give the lease up; True if a lease of ``holder`` was removed."""
        ...

    def lease_info(self, name: str) -> LeaseInfo | None:
        """The live lease (holder, remaining seconds), or None if free or expired."""
        ...

    # change notification ---------------------------------------------------------
    def changed_since(self, token: str | None) -> Changes:
        """Which records changed since ``token`` (None: start watching now).

        A cheap poll, not a replacement for reading: it is a hint, and a
        caller re-reads everything when ``names`` is None.
        """
        ...

    def close(self) -> None:
        """Release resources (open files, connections). Idempotent."""
        ...


# top-level names no backend accepts as records (the dir store keeps its leases in ``locks/``);
# an export file naming one cannot be imported into any store
RESERVED_NAMES: Final = ("locks",)


def check_name(name: str) -> str:
    """Validate a record name; raise ValueError with the reason."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValueError(f"invalid record name {name!r}")
    return name


def check_record_name(name: str) -> str:
    """A name every backend stores as a record: valid and not in a reserved namespace."""
    check_name(name)
    if name.split("/", 1)[0] in RESERVED_NAMES:
        raise ValueError(f"record name {name!r} is in the reserved '{name.split('/', 1)[0]}/' namespace")
    return name


def check_lease_name(name: str) -> str:
    if not isinstance(name, str) or not LEASE_NAME_RE.fullmatch(name):
        raise ValueError(f"invalid lease name {name!r}")
    return name
