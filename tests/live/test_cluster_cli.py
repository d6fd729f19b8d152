"""ha-cluster / ha-node entry points as users call them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PY = sys.executable


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([PY, "-m", *args], capture_output=True, text=True, timeout=120, check=False)
    if check:
        assert res.returncode == 0, res.stderr or res.stdout
    return res


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_up_hosts_creates_a_namespaced_etcd_cluster_and_destroy_removes_it(tmp_path: Path) -> None:
    d = tmp_path / "c"
    before = namespaces()  # other test files (xdist workers) may make and remove their own meanwhile
    ours: set[str] = set()
    try:
        out = run("cli.ha_cluster", "up", str(d), "--hosts", "3", "--store", "etcd").stdout
        assert "(quorate)" in out
        conf = json.loads((d / "cluster.json").read_text())
        assert conf["store"].startswith("etcd://") and len(conf["nodes"]) == 3
        status = run("cli.ha_cluster", "status", str(d)).stdout
        assert status.count("running pid") == 3 and "(leader)" in status
        # etcd over TLS only: the members' CA and certificates are private files of the cluster
        tls = d / "etcd-tls"
        assert conf["etcd"]["tls"] and conf["etcd_tls"]["ca"] == "etcd-tls/ca.pem"
        assert (tls.stat().st_mode & 0o777) == 0o700
        assert all((p.stat().st_mode & 0o777) == 0o600 for p in tls.iterdir())
        old = (tls / "client.pem").read_bytes(), (tls / "member-node1.pem").read_bytes()
        renewed = run("cli.ha_cluster", "etcd-renew-certs", str(d)).stdout
        assert "renewed" in renewed
        assert (
            old[0] != (tls / "client.pem").read_bytes() and old[1] != (tls / "member-node1.pem").read_bytes()
        )
        assert "(leader)" in run("cli.ha_cluster", "status", str(d)).stdout  # the new client cert gets in
        ours = set(conf["netns"].values())
        assert len(ours) == 3 and ours <= namespaces() - before, (ours, before)
        again = run("cli.ha_cluster", "up", str(d), "--hosts", "3", check=False)
        assert again.returncode == 2 and "already holds a cluster" in again.stderr
    finally:
        run("cli.ha_cluster", "destroy", str(d), check=False)
    assert ours and not ours & namespaces()  # every namespace of this cluster is gone


def test_ha_node_refuses_a_bad_store_override(tmp_path: Path) -> None:
    d = tmp_path / "c"
    run("cli.ha_cluster", "init", str(d), "--nodes", "3")
    res = run("cli.ha_node", "--node", "node1", "--cluster", str(d), "--store", "zk://nowhere", check=False)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        "ha-node: --store: store must be 'dir' or an etcd://host:port,.../cluster URL, got 'zk://nowhere'"
    ]


def test_init_warns_that_two_nodes_cannot_survive_a_failure(tmp_path: Path) -> None:
    res = run("cli.ha_cluster", "init", str(tmp_path / "two"), "--nodes", "2", "--no-curve")
    assert "warning: a 2-node cluster has no majority once one node is lost" in res.stderr
    res = run("cli.ha_cluster", "init", str(tmp_path / "three"), "--nodes", "3", "--no-curve")
    assert "warning" not in res.stderr
