"""``ha-cluster export`` / ``import``: every record moves between dir and etcd clusters intact.

Round trip dir -> etcd -> dir, byte for byte: configs, manager_status,
lrm_status, locations and the crm_commands queue; leases are not records
and stay behind. The etcd side is a real 3-member etcd cluster on loopback
(``store/etcd_harness.py``); the clusters' nodes are never started.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from admin.cluster import ClusterConfig
from ha.records import LrmResult, LrmStatus, ManagerStatus, ServiceData
from store import records as rec
from store.base import Store
from store.etcd_harness import EtcdCluster

PY = sys.executable
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    if shutil.which("etcd") is None:
        pytest.fail("etcd not installed: run 'make deps' (installs the Debian package etcd-server)")
    c = EtcdCluster(3, die_with_parent=True)
    try:
        c.start()
        yield c
    finally:
        c.stop(graceful=False)


def external(etcd: EtcdCluster) -> list[str]:
    """init's arguments for an etcd the operator runs: its endpoints and certificates (TLS)."""
    tls = etcd.client_tls
    assert tls is not None
    return ["--store", "etcd", "--endpoints", ",".join(etcd.endpoints()),
            "--etcd-ca", str(tls.ca), "--etcd-cert", str(tls.cert), "--etcd-key", str(tls.key)]  # fmt: skip


def run(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([PY, "-m", *args], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == code, f"{' '.join(args)}: exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def init(path: Path, *extra: str) -> ClusterConfig:
    run("cli.ha_cluster", "init", str(path), "--nodes", "3", "--no-curve", *extra)
    return ClusterConfig.load(path)


def records(store: Store) -> dict[str, bytes]:
    out = {}
    for name in store.list(""):
        r = store.read(name)
        assert r is not None
        out[name] = r.data
    return out


def populate(c: ClusterConfig) -> None:
    """Every kind of record a running cluster has, plus awkward bytes."""
    hm = ("cli.ha_manager", "--cluster", str(c.root), "--offline")
    run(*hm, "add", "proc:web", "--node", "node2", "--cmd", "sleep 1000", "--comment", "grüße, ok")
    run(*hm, "add", "proc:db", "--node", "node3", "--cmd", "sleep 1000", "--max_restart", "2")
    rule = ("node-affinity", "keep-web", "--resources", "proc:web", "--nodes", "node2:2,node1")
    run(*hm, "rules", "add", *rule)
    st = c.open_store()
    try:
        ms = ManagerStatus(master_node="node1", timestamp=1700000000.25)
        ms.node_status = {"node1": "online", "node2": "online", "node3": "fence"}
        ms.service_status = {"proc:web": ServiceData(state="started", node="node2", uid="u1")}
        rec.write_manager_status(st, ms)
        lrm = LrmStatus(state="active", mode="active", timestamp=1700000000.5)
        lrm.results = {"u1": LrmResult("proc:web", "started", 0)}
        rec.write_lrm_status(st, "node2", lrm)
        rec.write_location(st, "proc:db", "node1")
        rec.queue_crm_command(st, "migrate proc:web node1")
        rec.queue_crm_command(st, "stop proc:db 30")
        st.write("notes/binary", bytes(range(256)) * 3)
        st.write("notes/empty", b"")
        st.write("notes/no-newline", b"last line without newline")
        # a lease is not a record: it must not travel
        assert st.acquire_lease("ha_agent_node2_lock", "node2", 30)
    finally:
        st.close()


def test_round_trip_dir_etcd_dir_byte_for_byte(tmp_path: Path, etcd: EtcdCluster) -> None:
    a = init(tmp_path / "a")
    populate(a)
    a_store = a.open_store()
    original = records(a_store)
    a_store.close()
    assert {"resources.cfg", "rules.cfg", "manager_status", "nodes/node2/lrm_status", "locations/proc:db",
            "crm_commands", "notes/binary", "notes/empty"} <= set(original)  # fmt: skip

    f1, f2, f3 = (tmp_path / f"export{i}.json" for i in (1, 2, 3))
    run("cli.ha_cluster", "export", str(a.root), str(f1))
    b = init(tmp_path / "b", *external(etcd), "--name", "rt")
    assert b.store_kind == "etcd"
    run("cli.ha_cluster", "import", str(b.root), str(f1), "--other-cluster")  # pyha -> rt
    b_store = b.open_store()
    try:
        assert records(b_store) == original
        assert b_store.lease_info("ha_agent_node2_lock") is None, "a lease travelled with the records"
    finally:
        b_store.close()
    run("cli.ha_cluster", "export", str(b.root), str(f2))
    c = init(tmp_path / "c")
    run("cli.ha_cluster", "import", str(c.root), str(f2), "--other-cluster")  # rt -> pyha
    run("cli.ha_cluster", "export", str(c.root), str(f3))

    # the same records in all three files, and the same bytes on disk in a and c
    docs = [json.loads(f.read_text()) for f in (f1, f2, f3)]
    assert docs[0]["records"] == docs[1]["records"] == docs[2]["records"]
    assert [d["store"] for d in docs] == ["dir", "etcd", "dir"]
    for name, data in original.items():
        assert (c.store_dir / name).read_bytes() == data == (a.store_dir / name).read_bytes(), name
    c_store = c.open_store()
    try:
        assert records(c_store) == original
        assert c_store.lease_info("ha_agent_node2_lock") is None
    finally:
        c_store.close()


def test_import_refuses_to_mix_or_to_run_under_live_nodes(tmp_path: Path, etcd: EtcdCluster) -> None:
    a = init(tmp_path / "a")
    populate(a)
    f = tmp_path / "export.json"
    run("cli.ha_cluster", "export", str(a.root), str(f))
    # an etcd of one's own is reached over TLS only: without certificates init refuses
    res = run("cli.ha_cluster", "init", str(tmp_path / "plain"), "--store", "etcd",
              "--endpoints", ",".join(etcd.endpoints()), code=2)  # fmt: skip
    assert "no TLS" in res.stderr and "--etcd-ca" in res.stderr
    b = init(tmp_path / "b", *external(etcd), "--name", "mix")
    st = b.open_store()
    st.write("notes/only-in-b", b"x")
    st.close()
    # an export of another cluster is refused, naming both (issue #10)
    res = run("cli.ha_cluster", "import", str(b.root), str(f), code=2)
    assert f"is an export of cluster '{a.cluster}', not of 'mix'" in res.stderr
    res = run("cli.ha_cluster", "import", str(b.root), str(f), "--other-cluster", code=1)
    assert "notes/only-in-b" in res.stderr and "--force" in res.stderr
    # a record no store accepts (the dir store's lease namespace) is refused before any write
    doc = json.loads(f.read_text())
    doc["records"].append({"name": "locks/ha_manager_lock", "data": ""})
    with_lock = tmp_path / "with-lock.json"
    with_lock.write_text(json.dumps(doc))
    res = run("cli.ha_cluster", "import", str(b.root), str(with_lock), "--other-cluster", "--force", code=2)
    assert "reserved 'locks/' namespace" in res.stderr and "Traceback" not in res.stderr
    # nothing was written by the refused import
    st = b.open_store()
    assert st.read("manager_status") is None
    st.close()
    # a running node (here: a pid file naming a live process) refuses any import
    (b.run_dir("node1")).mkdir(parents=True, exist_ok=True)
    (b.run_dir("node1") / "ha-node.pid").write_text(f"{os.getpid()}\n")
    res = run("cli.ha_cluster", "import", str(b.root), str(f), "--force", "--other-cluster", code=1)
    assert "stop the cluster first" in res.stderr
    (b.run_dir("node1") / "ha-node.pid").unlink()
    run("cli.ha_cluster", "import", str(b.root), str(f), "--force", "--other-cluster")
    st = b.open_store()
    try:
        assert st.read("notes/only-in-b") is None
        assert records(st) == json_records(f)
    finally:
        st.close()
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something-else"}')
    run("cli.ha_cluster", "import", str(b.root), str(bad), code=2)


def json_records(f: Path) -> dict[str, bytes]:
    import base64  # noqa: PLC0415

    return {r["name"]: base64.b64decode(r["data"]) for r in json.loads(f.read_text())["records"]}
