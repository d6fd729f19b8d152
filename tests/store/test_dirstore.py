"""What only the dir backend promises: plain files, boot-id leases, crash safety."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

import store.dirstore as dirstore_mod
from store import StoreError, open_store
from store.base import Record
from store.dirstore import DirStore, read_boot_id, version_of
from tests.store.helpers import worker


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_records_are_plain_files(tmp_path: Path) -> None:
    st = DirStore(tmp_path)
    st.write("resources.cfg", b"proc: web\n\tcmd sleep 1\n")
    st.write("nodes/n1/lrm_status", b"{}")
    assert (tmp_path / "resources.cfg").read_bytes() == b"proc: web\n\tcmd sleep 1\n"
    assert (tmp_path / "nodes" / "n1" / "lrm_status").read_bytes() == b"{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".pyha", "locks", "nodes", "resources.cfg"]


def test_open_store_urls(tmp_path: Path) -> None:
    a = open_store(f"dir:{tmp_path}")
    b = open_store(str(tmp_path))
    assert isinstance(a, DirStore)
    assert isinstance(b, DirStore)
    from store.etcdstore import EtcdStore  # noqa: PLC0415

    assert isinstance(
        open_store("etcd://127.0.0.1:2379/pyha?insecure=1"), EtcdStore
    )  # no connection until used
    with pytest.raises(ValueError, match="not available"):
        open_store("zk://127.0.0.1:2181/pyha")
    with pytest.raises(ValueError):
        open_store("dir:")


def test_lease_namespace_reserved(tmp_path: Path) -> None:
    st = DirStore(tmp_path)
    with pytest.raises(ValueError, match="reserved"):
        st.write("locks/ha_manager_lock", b"{}")


def test_list_never_shows_internal_files_or_leases(tmp_path: Path) -> None:
    st = DirStore(tmp_path)
    st.write("manager_status", b"{}")
    st.acquire_lease("ha_manager_lock", "n1", 5)
    assert st.list() == ["manager_status"]
    assert st.list("locks/") == []
    assert st.list(".pyha/") == []
    assert st.list("loc") == []


def test_version_is_content_digest(tmp_path: Path) -> None:
    st = DirStore(tmp_path)
    assert st.write("a", b"same") == st.write("b", b"same") == version_of(b"same")


def test_lease_from_earlier_boot_is_expired(tmp_path: Path) -> None:
    old = DirStore(tmp_path, boot_id="boot-before-the-crash")
    assert old.acquire_lease("ha_agent_n1_lock", "n1", 3600)
    now = DirStore(tmp_path)
    assert now.boot_id == read_boot_id() != "boot-before-the-crash"
    assert now.lease_info("ha_agent_n1_lock") is None
    assert now.acquire_lease("ha_agent_n1_lock", "n2", 5)
    assert not old.release_lease("ha_agent_n1_lock", "n1")
    info = now.lease_info("ha_agent_n1_lock")
    assert info is not None
    assert info.holder == "n2"


def test_garbled_lease_file_counts_as_expired(tmp_path: Path) -> None:
    st = DirStore(tmp_path)
    (tmp_path / "locks" / "l1").write_bytes(b'{"holder": "n1", "boot_')
    assert st.lease_info("l1") is None
    assert st.acquire_lease("l1", "n2", 5)


def test_lease_expiry_on_injected_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    a = DirStore(tmp_path, clock=clock)
    b = DirStore(tmp_path, clock=clock)
    assert a.acquire_lease("l", "a", 10)
    clock.t += 9.999
    assert not b.acquire_lease("l", "b", 10)
    info = b.lease_info("l")
    assert info is not None
    assert info.remaining == pytest.approx(0.001)
    clock.t += 0.001  # exactly at expiry: expired
    assert b.lease_info("l") is None
    assert b.acquire_lease("l", "b", 10)
    assert not a.acquire_lease("l", "a", 10)


def test_lease_file_records_holder_boot_and_monotonic_expiry(tmp_path: Path) -> None:
    clock = FakeClock(50.0)
    st = DirStore(tmp_path, clock=clock)
    st.acquire_lease("ha_manager_lock", "n1", 5)
    d = json.loads((tmp_path / "locks" / "ha_manager_lock").read_text())
    assert d == {"holder": "n1", "boot_id": read_boot_id(), "expires": 55.0, "ttl": 5}


def test_stale_temp_files_are_ignored_and_cleaned(tmp_path: Path) -> None:
    st = DirStore(tmp_path)
    st.write("manager_status", b"old")
    # a writer that died between creating its temp file and the rename
    stale = tmp_path / ".manager_status.tmp.99999.deadbeef"
    stale.write_bytes(b"half a wri")
    rec = st.read("manager_status")
    assert rec is not None
    assert rec.data == b"old"
    assert st.list() == ["manager_status"]
    st.write("manager_status", b"new")
    assert not stale.exists()


def test_stuck_lock_holder_gives_error_not_hang(tmp_path: Path) -> None:
    st = DirStore(tmp_path, lock_timeout=0.2)
    st.write("manager_status", b"x")
    fd = os.open(tmp_path / ".pyha" / "locks" / "r.manager_status", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a second open file description: conflicts like another process
        t0 = time.monotonic()
        with pytest.raises(StoreError, match="busy"):
            st.write("manager_status", b"y", expect_version=version_of(b"x"))
        assert time.monotonic() - t0 < 2
        st.write("other", b"fine")  # other records are not blocked
    finally:
        os.close(fd)
    st.write("manager_status", b"y")


def test_nested_names_need_dirs_not_files(tmp_path: Path) -> None:
    st = DirStore(tmp_path)
    st.write("nodes", b"x")
    with pytest.raises(StoreError):
        st.write("nodes/n1/lrm_status", b"{}")


def test_journal_compaction_asks_for_full_reread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dirstore_mod, "JOURNAL_LIMIT", 200)
    st = DirStore(tmp_path)
    tok = st.changed_since(None).token
    st.write("a", b"1")
    ch = st.changed_since(tok)
    assert ch.names == frozenset({"a"})
    for i in range(40):
        st.write(f"rec{i}", b"1")
    assert st.changed_since(ch.token).names is None
    tok2 = st.changed_since(None).token
    st.write("b", b"2")
    assert st.changed_since(tok2).names == frozenset({"b"})
    assert st.changed_since("garbage").names is None


def test_unreadable_root_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StoreError):
        DirStore(tmp_path / "file" / "store")


def _valid_payload(data: bytes) -> int:
    """The seq of a complete writer payload; fails on a torn or foreign one."""
    d = json.loads(data)
    assert hashlib.sha256(d["pad"].encode()).hexdigest() == d["sum"]
    return int(d["seq"])


def test_killed_writer_never_leaves_a_torn_record(tmp_path: Path) -> None:
    """SIGKILL a writer mid-loop, repeatedly: the record is always whole and has every ack."""
    url = f"dir:{tmp_path}"
    st = DirStore(tmp_path)
    last_acked = 0
    for round_ in range(6):
        p = worker(url, "write-loop", "manager_status")
        try:
            assert p.stdout is not None
            acked = 0
            want = 5 + 7 * round_  # kill at a different point each round
            deadline = time.monotonic() + 10
            while acked < want:
                line = p.stdout.readline()
                assert line, f"writer died: {p.stderr.read() if p.stderr else ''}"
                acked = int(line)
                rec = st.read("manager_status")  # concurrent reads see whole records only
                assert rec is not None
                _valid_payload(rec.data)
                assert time.monotonic() < deadline
            os.kill(p.pid, signal.SIGKILL)
            p.wait(5)
        finally:
            if p.poll() is None:
                p.kill()
            p.communicate(timeout=5)
        rec = st.read("manager_status")
        assert rec is not None
        seq = _valid_payload(rec.data)
        assert seq >= acked  # SAFETY: no acknowledged write lost
        last_acked = seq
    assert last_acked > 0
    st.write("manager_status", b"{}")  # the next writer cleans up after the dead ones
    assert [n for n in os.listdir(tmp_path) if ".tmp." in n] == []


def test_lease_holder_in_other_process_blocks_until_expiry(tmp_path: Path) -> None:
    url = f"dir:{tmp_path}"
    p = worker(url, "hold", "ha_manager_lock", "other", "30")
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "held"
        st = DirStore(tmp_path)
        assert not st.acquire_lease("ha_manager_lock", "me", 1)
        p.kill()
        p.wait(5)
        # the holder is dead but its lease runs on: still refused (the watchdog argument)
        assert not st.acquire_lease("ha_manager_lock", "me", 1)
        info = st.lease_info("ha_manager_lock")
        assert info is not None
        assert info.remaining > 25
    finally:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=5)


# -- the read cache (issue #17) ----------------------------------------------------------


def _count_opens(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    opened: list[Path] = []
    real = DirStore._read_bytes

    def counting(path: Path) -> bytes | None:
        opened.append(path)
        return real(path)

    monkeypatch.setattr(DirStore, "_read_bytes", staticmethod(counting))
    return opened


def test_unchanged_record_is_read_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    st = DirStore(tmp_path)
    st.write("manager_status", b"A" * 1000)
    opened = _count_opens(monkeypatch)
    first = st.read("manager_status")
    for _ in range(5):
        assert st.read("manager_status") == first
    assert len(opened) == 1


def test_a_write_by_another_store_object_is_seen_at_the_next_read(tmp_path: Path) -> None:
    reader, writer = DirStore(tmp_path), DirStore(tmp_path)
    writer.write("manager_status", b"one")
    assert reader.read("manager_status") == Record(b"one", version_of(b"one"))
    writer.write("manager_status", b"two")  # same size: only the journal tells
    assert reader.read("manager_status") == Record(b"two", version_of(b"two"))
    writer.delete("manager_status")
    assert reader.read("manager_status") is None
    writer.append("crm_commands", "migrate vm:1 n2")
    assert reader.read("crm_commands") is not None
    assert writer.take("crm_commands") == b"migrate vm:1 n2\n"
    assert reader.read("crm_commands") == Record(b"", version_of(b""))


def test_a_file_changed_behind_the_store_is_seen_within_the_max_age(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(dirstore_mod.time, "monotonic", lambda: now[0])
    st = DirStore(tmp_path)
    st.write("resources.cfg", b"old\n")
    assert st.read("resources.cfg") == Record(b"old\n", version_of(b"old\n"))
    (tmp_path / "resources.cfg").write_bytes(b"new\n")  # an editor: no journal entry
    assert st.read("resources.cfg") == Record(b"old\n", version_of(b"old\n"))
    now[0] += dirstore_mod.READ_CACHE_MAX_AGE
    assert st.read("resources.cfg") == Record(b"new\n", version_of(b"new\n"))


def test_without_a_journal_nothing_is_cached(tmp_path: Path) -> None:
    st = DirStore(tmp_path)
    st.write("resources.cfg", b"old\n")
    st.read("resources.cfg")
    (tmp_path / ".pyha" / "journal").unlink()
    (tmp_path / "resources.cfg").write_bytes(b"new\n")
    assert st.read("resources.cfg") == Record(b"new\n", version_of(b"new\n"))


def test_a_renewal_rewrites_the_lease_in_place_and_readers_never_see_it_torn(tmp_path: Path) -> None:
    holder, reader = DirStore(tmp_path), DirStore(tmp_path)
    assert holder.acquire_lease("agent_n1", "n1#a", 5.0)
    path = tmp_path / "locks" / "agent_n1"
    ino = path.stat().st_ino
    stop, seen = threading.Event(), []

    def renew() -> None:
        while not stop.is_set():
            assert holder.acquire_lease("agent_n1", "n1#a", 5.0)

    t = threading.Thread(target=renew)
    t.start()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            seen.append(reader.lease_info("agent_n1"))
            assert not reader.acquire_lease("agent_n1", "n2#b", 5.0)  # SAFETY: never free meanwhile
    finally:
        stop.set()
        t.join()
    assert seen and all(i is not None and i.holder == "n1#a" for i in seen)
    assert path.stat().st_ino == ino  # no rename per renewal (issue #17)
    assert path.stat().st_size == dirstore_mod.LEASE_RECORD_SIZE


def test_writes_under_deferring_are_synced_together_before_the_next_durable_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    st, other = DirStore(tmp_path), DirStore(tmp_path)
    synced: list[str] = []
    real = os.fsync

    def recording(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    st.write("locations/vm:0", b"n1 0\n")  # the folder exists (a new folder is synced at once)
    monkeypatch.setattr(dirstore_mod.os, "fsync", recording)
    with st.deferring():
        for i in range(3):
            st.write(f"locations/vm:{i}", b"n2 1\n")
    assert synced == []  # no fsync per move
    assert other.read("locations/vm:1") == Record(b"n2 1\n", version_of(b"n2 1\n"))  # visible at once
    st.write("manager_status", b"{}")
    locs = str(tmp_path / "locations")
    # SAFETY: the moves reach the disk (files, then their folder) before the write that follows them
    assert synced[:4] == [f"{locs}/vm:0", f"{locs}/vm:1", f"{locs}/vm:2", locs]
    own = str(tmp_path / ".manager_status.tmp.")
    assert len(synced) == 6 and synced[4].startswith(own) and synced[5] == str(tmp_path)
    synced.clear()
    st.write("manager_status", b"{} ")
    assert len(synced) == 2 and synced[0].startswith(own)  # nothing left to sync


def test_deferred_notes_go_in_one_journal_append_before_the_next_durable_write(tmp_path: Path) -> None:
    """The master's recovery round (issue #15): one note, one wake-up of every watcher, not one per move."""
    st, other = DirStore(tmp_path), DirStore(tmp_path)
    st.write("locations/vm:0", b"n1 0\n")
    assert other.read("locations/vm:0") is not None  # cached by the other store object
    token = other.changed_since(None).token
    mark = other.change_mark()
    with st.deferring(notes=True):
        for i in range(3):
            st.write(f"locations/vm:{i}", b"n2 1\n")
        assert other.change_mark() == mark  # nothing announced yet: no watcher woke
        assert st.read("locations/vm:0") == Record(b"n2 1\n", version_of(b"n2 1\n"))  # its own writes
    st.write("manager_status", b"{}")
    changes = other.changed_since(token)
    assert changes.names == {"locations/vm:0", "locations/vm:1", "locations/vm:2", "manager_status"}
    # the moves came in one append, before the write that follows them
    lines = (tmp_path / ".pyha" / "journal").read_bytes().splitlines()
    assert lines[-4:] == [b"locations/vm:0", b"locations/vm:1", b"locations/vm:2", b"manager_status"]
    assert other.read("locations/vm:0") == Record(b"n2 1\n", version_of(b"n2 1\n"))  # its cache moved on


def test_deferring_without_notes_announces_each_write_at_once(tmp_path: Path) -> None:
    """A live migration's commit: the target reads the location before it resumes the guest."""
    st, other = DirStore(tmp_path), DirStore(tmp_path)
    st.write("locations/vm:1", b"n1 0\n")
    assert other.read("locations/vm:1") == Record(b"n1 0\n", version_of(b"n1 0\n"))
    with st.deferring():
        st.write("locations/vm:1", b"n2 1\n")
        assert other.read("locations/vm:1") == Record(b"n2 1\n", version_of(b"n2 1\n"))


def test_close_announces_what_is_still_deferred(tmp_path: Path) -> None:
    st, other = DirStore(tmp_path), DirStore(tmp_path)
    token = other.changed_since(None).token
    with st.deferring(notes=True):
        st.write("locations/vm:7", b"n3 2\n")
    assert other.changed_since(token).names == set()
    st.close()
    assert other.changed_since(token).names == {"locations/vm:7"}
