"""etcd backend specifics beyond the contract: URLs, versions, keys, the lease backstop."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from store import StoreError, VersionConflict
from store import etcdstore as es
from store.base import Record
from store.etcd_gateway import prefix_end
from store.etcd_harness import EtcdCluster, free_ports
from store.etcd_url import parse_url
from store.etcdstore import EtcdStore
from tests.store.etcd_fixtures import Counting, cluster_fixture, unique_cluster_name
from tests.store.helpers import wait_until

# -- no server needed ----------------------------------------------------------------------------


def test_parse_url() -> None:
    u = parse_url("etcd://10.0.0.1:2379,10.0.0.2,[::1]:4001/prod?timeout=1.5&insecure=1")
    assert u.endpoints == (("10.0.0.1", 2379), ("10.0.0.2", 2379), ("::1", 4001))
    assert (u.cluster, u.timeout, u.insecure, u.tls) == ("prod", 1.5, True, None)
    assert str(u) == "etcd://10.0.0.1:2379,10.0.0.2:2379,[::1]:4001/prod?timeout=1.5&insecure=1"
    assert parse_url("etcd://h:1?insecure=1").cluster == "default"
    assert str(parse_url("etcd://h:1/c?insecure=1")) == "etcd://h:1/c?insecure=1"
    u = parse_url("etcd://https://h:1,h2/c?ca=/t/ca.pem&cert=/t/c.pem&key=/t/c.key")
    assert u.endpoints == (("h", 1), ("h2", 2379)) and u.tls == ("/t/ca.pem", "/t/c.pem", "/t/c.key")
    assert not u.insecure and str(u) == "etcd://h:1,h2:2379/c?ca=/t/ca.pem&cert=/t/c.pem&key=/t/c.key"
    assert parse_url(str(u)) == u


@pytest.mark.parametrize(
    "bad",
    [
        "dir:/x",
        "etcd:///c?insecure=1",
        "etcd://h:notaport/c?insecure=1",
        "etcd://h:70000/c?insecure=1",
        "etcd://h:1/a/b?insecure=1",
        "etcd://h:1/.x?insecure=1",
        "etcd://h:1/c?timeout=0&insecure=1",
        "etcd://h:1/c?timeout=x&insecure=1",
        "etcd://h:1/c?retries=3&insecure=1",
        "etcd://[::1/c?insecure=1",
        "etcd://h:1/c?insecure=maybe",
    ],
)
def test_parse_url_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_url(bad)


def test_prefix_end() -> None:
    assert prefix_end(b"/pyha/c/records/") == b"/pyha/c/records0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff") == b"\x00"


def test_no_server_is_a_bounded_store_error() -> None:
    (port,) = free_ports(1)
    st = EtcdStore.from_url(f"etcd://127.0.0.1:{port}/c?timeout=0.4&insecure=1")
    for op in (lambda: st.read("a"), lambda: st.write("a", b"x"), lambda: st.acquire_lease("l", "n1", 1)):
        t0 = time.monotonic()
        with pytest.raises(StoreError, match="no answer in time"):
            op()
        assert time.monotonic() - t0 < 1.0
    st.close()


# -- against a real cluster ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[EtcdCluster]:
    yield from cluster_fixture(3)


@pytest.fixture
def st(cluster: EtcdCluster) -> Iterator[EtcdStore]:
    s = EtcdStore.from_url(cluster.url(unique_cluster_name()))
    yield s
    s.close()


def raw_get(st: EtcdStore, key: bytes) -> dict[str, Any] | None:
    resp = st._gw.call(
        "/v3/kv/range", {"key": base64.b64encode(key).decode()}, deadline=st._deadline(), mutating=False
    )
    kvs = resp.get("kvs") or []
    return kvs[0] if kvs else None


def time_to_live(st: EtcdStore, lease_id: int) -> int:
    resp = st._gw.call("/v3/lease/timetolive", {"ID": str(lease_id)}, deadline=st._deadline(), mutating=False)
    return int(resp.get("TTL", -1))


def test_keys_layout_and_versions(st: EtcdStore) -> None:
    v = st.write("nodes/n1/lrm_status", b"{}")
    kv = raw_get(st, f"/pyha/{st.cluster}/records/nodes/n1/lrm_status".encode())
    assert kv is not None
    assert v == kv["mod_revision"]  # version = etcd mod_revision
    assert raw_get(st, f"/pyha/{st.cluster}/changes/nodes/n1/lrm_status".encode()) is not None
    assert st.acquire_lease("ha_manager_lock", "n1", 5)
    lk = raw_get(st, f"/pyha/{st.cluster}/leases/ha_manager_lock".encode())
    assert lk is not None
    assert int(lk["lease"]) > 0  # bound to an etcd lease
    # rewriting the same bytes is a new version: versions are revisions, not digests
    assert st.write("nodes/n1/lrm_status", b"{}") != v


def test_clusters_do_not_see_each_other(cluster: EtcdCluster, st: EtcdStore) -> None:
    other = EtcdStore.from_url(cluster.url(unique_cluster_name()))
    st.write("manager_status", b"x")
    st.acquire_lease("ha_manager_lock", "n1", 5)
    assert other.read("manager_status") is None
    assert other.list() == []
    assert other.lease_info("ha_manager_lock") is None
    assert other.acquire_lease("ha_manager_lock", "n2", 5)
    other.close()


def test_foreign_versions_conflict(st: EtcdStore) -> None:
    v = st.write("a", b"1")
    for bad in ("0", "-1", "abc", "1" + v, "blake2b-digest"):
        with pytest.raises(VersionConflict) as ei:
            st.write("a", b"2", expect_version=bad)
        assert ei.value.actual == v
    with pytest.raises(VersionConflict):
        st.delete("a", expect_version="")  # ABSENT, but it exists
    assert st.delete("b", expect_version="") is False


def test_take_never_creates(st: EtcdStore) -> None:
    assert st.take("crm_commands") == b""
    assert st.read("crm_commands") is None
    tok = st.changed_since(None).token
    st.write("crm_commands", b"")
    assert st.take("crm_commands") == b""
    assert st.changed_since(tok).names == frozenset({"crm_commands"})


def test_changed_since_tokens(st: EtcdStore) -> None:
    tok = st.changed_since(None).token
    assert st.changed_since("garbage").names is None
    cluster_id, rev = tok.split(":")
    assert st.changed_since(f"{int(cluster_id) + 1}:{rev}").names is None  # another etcd cluster
    assert st.changed_since(f"{cluster_id}:{int(rev) + 1000}").names is None  # from the future
    st.acquire_lease("l1", "n1", 5)
    assert st.changed_since(tok).names == frozenset()  # leases are not records


def test_too_large_record_is_a_store_error(st: EtcdStore) -> None:
    with pytest.raises(StoreError, match=r"too large|larger than max"):
        st.write("big", os.urandom(2 * 1024 * 1024))  # random: what the compression cannot shrink
    assert st.read("big") is None


def test_backstop_lease_outlives_the_holder_deadline(st: EtcdStore) -> None:
    t0 = time.monotonic()
    assert st.acquire_lease("ha_agent_n1_lock", "n1", 2)
    lk = raw_get(st, f"/pyha/{st.cluster}/leases/ha_agent_n1_lock".encode())
    assert lk is not None
    server_ttl = time_to_live(st, int(lk["lease"]))
    # etcd deletes the key no earlier than ~now + server_ttl; the holder counts until t0 + 2
    assert time.monotonic() + server_ttl - 1 >= t0 + 2 + es.BACKSTOP_MARGIN
    lease_id = int(lk["lease"])
    assert st.release_lease("ha_agent_n1_lock", "n1")
    assert time_to_live(st, lease_id) == -1  # release revoked it


def test_renewals_write_new_revisions(st: EtcdStore, cluster: EtcdCluster) -> None:
    other = EtcdStore.from_url(st.url)
    assert st.acquire_lease("l", "n1", 0.5)
    revs = set()
    for _ in range(5):
        assert st.acquire_lease("l", "n1", 0.5)
        kv = raw_get(st, f"/pyha/{st.cluster}/leases/l".encode())
        assert kv is not None
        revs.add(kv["mod_revision"])
        assert not other.acquire_lease("l", "n2", 0.5)
        time.sleep(0.05)
    assert len(revs) == 5
    other.close()


def test_abandoned_lease_key_is_collected_by_etcd(
    cluster: EtcdCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(es, "BACKSTOP_SLACK", 1)
    monkeypatch.setattr(es, "BACKSTOP_MARGIN", 0.5)
    st = EtcdStore.from_url(cluster.url(unique_cluster_name()))
    assert st.acquire_lease("l", "gone", 0.2)
    st.close()  # the holder vanishes without releasing
    key = f"/pyha/{st.cluster}/leases/l".encode()
    watcher = EtcdStore.from_url(st.url)
    assert raw_get(watcher, key) is not None
    # etcd's own timer (granted ceil(0.2) + 1 s, raised to etcd's minimum of 2 s) removes it
    wait_until(lambda: raw_get(watcher, key) is None, timeout=6, interval=0.1)
    assert watcher.acquire_lease("l", "n2", 1)
    watcher.close()


def test_big_records_are_stored_compressed(st: EtcdStore) -> None:
    """Issue #15: the master's 200 KB manager_status went to every member and every node as it was."""
    big = b"".join(
        b'"proc:idle%d": {"state": "started", "node": "node%d"},\n' % (i, i % 20) for i in range(3000)
    )
    version = st.write("manager_status", big)
    rec = st.read("manager_status")
    assert rec is not None and rec.data == big and rec.version == version
    stored, _ = st._get(st._rkey("manager_status"), st._deadline())
    assert stored is not None and stored.value.startswith(b"\x00z") and len(stored.value) * 5 < len(big)
    st.append("manager_status", "one line more")  # appended to the whole bytes, stored compressed again
    assert st.read("manager_status").data == big + b"one line more\n"  # type: ignore[union-attr]
    assert st.take("manager_status") == big + b"one line more\n"
    assert st.read("manager_status").data == b""  # type: ignore[union-attr]


def test_small_records_are_stored_as_they_are(st: EtcdStore) -> None:
    st.write("datacenter.cfg", b"ha: shutdown_policy=conditional\n")
    stored, _ = st._get(st._rkey("datacenter.cfg"), st._deadline())
    assert stored is not None and stored.value == b"ha: shutdown_policy=conditional\n"
    # bytes that look like the tag are kept apart from it
    for odd in (b"\x00z not compressed", b"\x00r", b"\x00"):
        st.write("odd", odd)
        assert st.read("odd").data == odd  # type: ignore[union-attr]


def test_read_many_reads_many_records_in_few_requests(st: EtcdStore) -> None:
    """Issue #15: a master's recovery round read 100 locations one request after the other."""
    names = [f"locations/proc:s{i}" for i in range(150)]
    for i, name in enumerate(names):
        st.write(name, f"n{i % 3} 1\n".encode())
    counted = Counting(st)
    got = st.read_many([*names, "locations/proc:none", "locations/proc:other"])
    assert counted.paths == ["/v3/kv/txn", "/v3/kv/txn"]  # 152 names: 128 a transaction
    assert got["locations/proc:none"] is None and got["locations/proc:other"] is None
    for name in names:
        assert got[name] == st.read(name), name


def test_write_many_writes_all_or_nothing_in_one_request(st: EtcdStore) -> None:
    versions = [st.write(f"locations/proc:w{i}", b"n1 1\n") for i in range(3)]
    watch = st.changed_since(None).token
    counted = Counting(st)
    stale = [(f"locations/proc:w{i}", b"n2 2\n", v) for i, v in enumerate(versions)]
    stale[1] = ("locations/proc:w1", b"n2 2\n", str(int(versions[1]) - 1))  # moved meanwhile
    with pytest.raises(VersionConflict):
        st.write_many(stale)
    assert counted.paths == ["/v3/kv/txn"]
    assert [st.read(f"locations/proc:w{i}").data for i in range(3)] == [b"n1 1\n"] * 3  # type: ignore[union-attr]
    # created only if absent, moved only from the version read
    version = st.write_many(
        [
            *((f"locations/proc:w{i}", b"n2 2\n", v) for i, v in enumerate(versions)),
            ("locations/new", b"n3 1\n", ""),
        ]
    )
    for name in ("locations/proc:w0", "locations/proc:w1", "locations/proc:w2", "locations/new"):
        now = st.read(name)
        assert now is not None and now.version == version and now.data in (b"n2 2\n", b"n3 1\n")
    changed = st.changed_since(watch)  # every write is noted in the change log, as one write's is
    assert changed.names is not None
    assert {"locations/proc:w0", "locations/proc:w1", "locations/proc:w2", "locations/new"} <= changed.names
    with pytest.raises(VersionConflict):
        st.write_many([("locations/new", b"n1 2\n", "")])  # exists now
    with pytest.raises(ValueError, match="at most 64"):
        st.write_many([(f"locations/x{i}", b"n1 1\n", "") for i in range(65)])


def test_a_large_record_is_sent_again_only_when_it_changed(cluster: EtcdCluster, st: EtcdStore) -> None:
    """Issue #15: every LRM read the whole manager_status several times a second at rest."""
    other = EtcdStore.from_url(cluster.url(st.cluster))  # another node's store
    big = os.urandom(3000).hex().encode()  # 6,000 bytes, hardly compressible
    other.write("manager_status", big)
    sizes: list[int] = []
    inner = st._gw.call

    def call(path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        resp = inner(path, body, **kw)
        sizes.append(len(json.dumps(resp)))
        return resp

    st._gw.call = call  # type: ignore[method-assign]
    first = st.read("manager_status")
    assert first is not None and first.data == big
    again = st.read("manager_status")
    assert again == first and sizes[1] < 1000 < len(big) < sizes[0]  # the same record, not its bytes
    version = other.write("manager_status", big + b"!")  # written elsewhere: read at once
    assert st.read("manager_status") == Record(big + b"!", version)
    other.write("manager_status", b"small")
    assert st.read("manager_status").data == b"small"  # type: ignore[union-attr]
    other.write("manager_status", big)
    assert st.read("manager_status").data == big  # type: ignore[union-attr]
    other.delete("manager_status")
    assert st.read("manager_status") is None
    assert len(sizes) == 6  # one request per read, as before
    other.close()
