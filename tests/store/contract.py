"""The contract every Store backend must pass (run it by subclassing :class:`StoreContract`).

A backend's test module provides one fixture, ``store_url``: a URL that
``store.open_store`` opens and that separate worker processes can open too::

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store_url(self, tmp_path: Path) -> str:
            return "my:..."

Timing-dependent tests use short TTLs and bounded waits.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from store import ABSENT, Store, VersionConflict, open_store
from tests.store.helpers import finish, wait_until, worker


class StoreContract:
    @pytest.fixture
    def store(self, store_url: str) -> Iterator[Store]:
        st = open_store(store_url)
        yield st
        st.close()

    @pytest.fixture
    def other(self, store_url: str) -> Iterator[Store]:
        """A second client of the same store (another node)."""
        st = open_store(store_url)
        yield st
        st.close()

    # -- records ---------------------------------------------------------------------

    def test_read_missing_is_none(self, store: Store) -> None:
        assert store.read("manager_status") is None

    def test_write_read_roundtrip_and_versions(self, store: Store, other: Store) -> None:
        v1 = store.write("manager_status", b'{"a":1}')
        rec = other.read("manager_status")
        assert rec is not None
        assert rec.data == b'{"a":1}'
        assert rec.version == v1
        assert v1 != ""
        v2 = other.write("manager_status", b'{"a":2}')
        assert v2 != v1
        rec2 = store.read("manager_status")
        assert rec2 is not None
        assert (rec2.data, rec2.version) == (b'{"a":2}', v2)

    def test_empty_record_exists(self, store: Store) -> None:
        store.write("crm_commands", b"")
        rec = store.read("crm_commands")
        assert rec is not None
        assert rec.data == b""
        assert rec.version != ABSENT

    def test_written_record_visible_to_fresh_client(self, store: Store, store_url: str) -> None:
        store.write("nodes/n1/lrm_status", b"{}")
        fresh = open_store(store_url)
        try:
            rec = fresh.read("nodes/n1/lrm_status")
            assert rec is not None
            assert rec.data == b"{}"
        finally:
            fresh.close()

    def test_cas_success_and_conflict(self, store: Store, other: Store) -> None:
        v1 = store.write("locations/proc:web", b"n1\n")
        v2 = other.write("locations/proc:web", b"n2\n", expect_version=v1)
        with pytest.raises(VersionConflict) as ei:
            store.write("locations/proc:web", b"n3\n", expect_version=v1)
        assert ei.value.actual == v2
        rec = store.read("locations/proc:web")
        assert rec is not None
        assert rec.data == b"n2\n"

    def test_cas_create_only_if_absent(self, store: Store, other: Store) -> None:
        store.write("locations/proc:a", b"n1\n", expect_version=ABSENT)
        with pytest.raises(VersionConflict):
            other.write("locations/proc:a", b"n2\n", expect_version=ABSENT)
        with pytest.raises(VersionConflict):
            store.write("locations/proc:b", b"n2\n", expect_version="some-version")
        assert store.read("locations/proc:b") is None

    def test_delete(self, store: Store) -> None:
        v = store.write("rules.cfg", b"x")
        with pytest.raises(VersionConflict):
            store.delete("rules.cfg", expect_version="other")
        assert store.delete("rules.cfg", expect_version=v) is True
        assert store.read("rules.cfg") is None
        assert store.delete("rules.cfg") is False

    def test_list_prefix_sorted(self, store: Store) -> None:
        for name in ("resources.cfg", "nodes/n2/lrm_status", "nodes/n1/lrm_status", "locations/proc:x"):
            store.write(name, b"1")
        assert store.list("nodes/") == ["nodes/n1/lrm_status", "nodes/n2/lrm_status"]
        assert store.list("nodes/n1") == ["nodes/n1/lrm_status"]
        assert store.list("locations/") == ["locations/proc:x"]
        assert store.list("nope/") == []
        assert store.list() == sorted(
            ["resources.cfg", "nodes/n2/lrm_status", "nodes/n1/lrm_status", "locations/proc:x"]
        )
        store.delete("nodes/n2/lrm_status")
        assert store.list("nodes/") == ["nodes/n1/lrm_status"]

    def test_leases_are_not_records(self, store: Store) -> None:
        assert store.acquire_lease("ha_manager_lock", "n1", 5)
        assert store.list() == []

    @pytest.mark.parametrize("bad", ["", "/abs", "a/../b", ".hidden", "a//b", "a/.b", "a b", "x\n"])
    def test_invalid_names_rejected(self, store: Store, bad: str) -> None:
        with pytest.raises(ValueError):
            store.write(bad, b"x")
        with pytest.raises(ValueError):
            store.read(bad)

    def test_append_and_take(self, store: Store) -> None:
        assert store.take("crm_commands") == b""
        store.append("crm_commands", "migrate proc:a n2")
        store.append("crm_commands", "stop proc:b 10")
        rec = store.read("crm_commands")
        assert rec is not None
        assert rec.data == b"migrate proc:a n2\nstop proc:b 10\n"
        assert store.take("crm_commands") == b"migrate proc:a n2\nstop proc:b 10\n"
        assert store.take("crm_commands") == b""
        store.append("crm_commands", "arm-ha")
        assert store.take("crm_commands") == b"arm-ha\n"

    def test_append_rejects_newline(self, store: Store) -> None:
        with pytest.raises(ValueError):
            store.append("crm_commands", "a\nb")

    def test_changed_since(self, store: Store, other: Store) -> None:
        first = store.changed_since(None)
        assert first.names is None
        other.write("manager_status", b"{}")
        other.append("crm_commands", "arm-ha")
        ch = store.changed_since(first.token)
        assert ch.names is not None
        assert {"manager_status", "crm_commands"} <= ch.names
        quiet = store.changed_since(ch.token)
        assert quiet.names == frozenset()
        other.delete("manager_status")
        ch2 = store.changed_since(quiet.token)
        assert ch2.names == frozenset({"manager_status"})

    # -- concurrency across processes -------------------------------------------------------

    def test_append_take_atomic_across_processes(self, store: Store, store_url: str) -> None:
        n, tags = 60, ("a", "b", "c")
        procs = [worker(store_url, "append", "crm_commands", str(n), t) for t in tags]
        taker = worker(store_url, "take", "crm_commands", "0.8")
        outs = finish(procs)
        taken = finish([taker])[0] + store.take("crm_commands").decode()
        assert all(o == "" for o in outs)
        lines = taken.splitlines()
        assert sorted(lines) == sorted(f"{t}-{i}" for t in tags for i in range(n))  # each exactly once
        for t in tags:  # and each writer's lines in its order
            mine = [int(x.split("-")[1]) for x in lines if x.startswith(t + "-")]
            assert mine == sorted(mine)

    def test_cas_increment_across_processes(self, store: Store, store_url: str) -> None:
        procs = [worker(store_url, "cas-incr", "counter", "40") for _ in range(3)]
        finish(procs)
        rec = store.read("counter")
        assert rec is not None
        assert int(rec.data) == 120

    # -- leases ---------------------------------------------------------------------------

    def test_lease_exclusive_renew_release(self, store: Store, other: Store) -> None:
        assert store.acquire_lease("ha_manager_lock", "n1", 5)
        assert not other.acquire_lease("ha_manager_lock", "n2", 5)
        assert store.acquire_lease("ha_manager_lock", "n1", 5)  # renew
        info = other.lease_info("ha_manager_lock")
        assert info is not None
        assert info.holder == "n1"
        assert 4 < info.remaining <= 5
        holder, _remaining = info  # a plain (holder, remaining) tuple too
        assert holder == "n1"
        assert not other.release_lease("ha_manager_lock", "n2")
        assert other.lease_info("ha_manager_lock") is not None
        assert store.release_lease("ha_manager_lock", "n1")
        assert other.lease_info("ha_manager_lock") is None
        assert not store.release_lease("ha_manager_lock", "n1")
        assert other.acquire_lease("ha_manager_lock", "n2", 5)

    def test_lease_free_info_is_none(self, store: Store) -> None:
        assert store.lease_info("ha_agent_n1_lock") is None

    def test_lease_expiry_and_takeover(self, store: Store, other: Store) -> None:
        assert store.acquire_lease("ha_agent_n1_lock", "n1", 0.3)
        assert not other.acquire_lease("ha_agent_n1_lock", "n2", 5)
        wait_until(lambda: other.lease_info("ha_agent_n1_lock") is None, timeout=2)
        assert other.acquire_lease("ha_agent_n1_lock", "n2", 5)
        assert not store.acquire_lease("ha_agent_n1_lock", "n1", 0.3)  # the old holder lost it
        info = store.lease_info("ha_agent_n1_lock")
        assert info is not None
        assert info.holder == "n2"

    def test_lease_renewal_keeps_it(self, store: Store, other: Store) -> None:
        assert store.acquire_lease("ha_manager_lock", "n1", 0.6)
        end = time.monotonic() + 1.2  # twice the ttl, renewing every 0.1 s
        while time.monotonic() < end:
            assert not other.acquire_lease("ha_manager_lock", "n2", 0.6)
            time.sleep(0.1)
            assert store.acquire_lease("ha_manager_lock", "n1", 0.6)

    def test_lease_never_expires_early(self, store: Store, other: Store) -> None:
        t0 = time.monotonic()
        assert store.acquire_lease("l1", "n1", 0.5)
        while other.lease_info("l1") is not None or not other.acquire_lease("l1", "n2", 1):
            assert time.monotonic() - t0 < 3, "lease never expired"
            time.sleep(0.01)
        # SAFETY: the holder counted on [t0, t0 + ttl); the takeover is not inside it.
        assert time.monotonic() - t0 >= 0.5

    def test_lease_bad_arguments(self, store: Store) -> None:
        with pytest.raises(ValueError):
            store.acquire_lease("l1", "n1", 0)
        with pytest.raises(ValueError):
            store.acquire_lease("l1", "", 1)
        with pytest.raises(ValueError):
            store.acquire_lease("a/../b", "n1", 1)

    def test_lease_exclusive_across_processes(self, store: Store, store_url: str) -> None:
        procs = [worker(store_url, "mutex", "mx", f"h{i}", "2", "1.2", "owner") for i in range(3)]
        stats = [json.loads(o) for o in finish(procs)]
        assert all(s["violations"] == 0 for s in stats), stats
        assert all(s["acquired"] >= 1 for s in stats), stats

    def test_lease_takeover_after_holder_dies(self, store: Store, store_url: str) -> None:
        p = worker(store_url, "hold", "ha_agent_n1_lock", "n1", "0.6")
        try:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "held"
            p.kill()
            p.wait(5)
            t_dead = time.monotonic()
            info = store.lease_info("ha_agent_n1_lock")
            assert info is not None
            assert info.holder == "n1"
            assert not store.acquire_lease("ha_agent_n1_lock", "master", 5)
            wait_until(lambda: store.acquire_lease("ha_agent_n1_lock", "master", 5), timeout=3)
            assert time.monotonic() - t_dead <= 0.6 + 0.5
        finally:
            if p.poll() is None:
                p.kill()
            p.communicate(timeout=5)
