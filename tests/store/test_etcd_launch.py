"""The one etcd launcher: command line, initial state, leader agreement, stop order (no etcd needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from admin.cluster import ClusterConfig, EtcdTlsPaths, LocalEtcd
from cli.cluster_etcd import member_command
from store.etcd_launch import (
    EtcdMember,
    MemberTls,
    agreed_leader,
    etcd_command,
    initial_cluster,
    initial_state,
    stop_order,
)
from store.etcd_tls import TlsFiles
from store.etcd_url import parse_url

TLS = MemberTls(TlsFiles(Path("/t/ca.pem"), Path("/t/member-a.pem"), Path("/t/member-a.key")))


def flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_command_line_carries_the_flags_pyha_relies_on(tmp_path: Path) -> None:
    a, b = EtcdMember("a", "10.0.0.1"), EtcdMember("b", "::1", 12379, 12380)
    assert b.endpoint == "[::1]:12379" and b.peer_url == "https://[::1]:12380"
    initial = initial_cluster([a, b])
    assert initial == "a=https://10.0.0.1:2380,b=https://[::1]:12380"
    cmd = etcd_command(a, data_dir=tmp_path / "a.etcd", initial=initial, token="t1", netns="ns-a", tls=TLS)
    assert cmd[:5] == ["ip", "netns", "exec", "ns-a", "etcd"]
    assert (
        flag(cmd, "--listen-client-urls") == flag(cmd, "--advertise-client-urls") == "https://10.0.0.1:2379"
    )
    assert flag(cmd, "--listen-peer-urls") == "https://10.0.0.1:2380"
    # clients and peers must present a certificate of the cluster's CA
    assert "--client-cert-auth" in cmd and "--peer-client-cert-auth" in cmd
    assert flag(cmd, "--trusted-ca-file") == flag(cmd, "--peer-trusted-ca-file") == "/t/ca.pem"
    assert flag(cmd, "--cert-file") == flag(cmd, "--peer-cert-file") == "/t/member-a.pem"
    assert flag(cmd, "--key-file") == flag(cmd, "--peer-key-file") == "/t/member-a.key"
    assert flag(cmd, "--initial-cluster") == initial and flag(cmd, "--initial-cluster-token") == "t1"
    assert "--pre-vote=true" in cmd
    assert flag(cmd, "--auto-compaction-mode") == "revision"
    assert (flag(cmd, "--heartbeat-interval"), flag(cmd, "--election-timeout")) == ("100", "1000")
    # a member that wrote its data dir rejoins; a fresh one bootstraps
    assert flag(cmd, "--initial-cluster-state") == "new"
    (tmp_path / "a.etcd" / "member").mkdir(parents=True)
    assert initial_state(tmp_path / "a.etcd") == "existing"
    cmd = etcd_command(
        a, data_dir=tmp_path / "a.etcd", initial=initial, token="t1", binary="/opt/etcd", tls=TLS
    )
    assert cmd[0] == "/opt/etcd" and flag(cmd, "--initial-cluster-state") == "existing"


def test_https_members_need_certificates_and_plain_ones_take_none(tmp_path: Path) -> None:
    secure, plain = EtcdMember("a", "10.0.0.1"), EtcdMember("a", "10.0.0.1", tls=False)
    with pytest.raises(ValueError, match="need certificates"):
        etcd_command(secure, data_dir=tmp_path, initial="", token="t")
    with pytest.raises(ValueError, match="take no certificates"):
        etcd_command(plain, data_dir=tmp_path, initial="", token="t", tls=TLS)
    cmd = etcd_command(plain, data_dir=tmp_path, initial="", token="t")
    assert flag(cmd, "--listen-client-urls") == "http://10.0.0.1:2379" and "--client-cert-auth" not in cmd


def test_ha_cluster_members_use_the_launcher(tmp_path: Path) -> None:
    members = {n: EtcdMember(n, f"10.1.0.{i}") for i, n in enumerate(["node1", "node2"], 1)}
    etcd = LocalEtcd("tok", members, heartbeat_ms=50, election_ms=500)
    c = ClusterConfig(
        root=tmp_path,
        cluster="c",
        nodes={"node1": "tcp://10.1.0.1:7100", "node2": "tcp://10.1.0.2:7100"},
        netns={"node1": "ns1", "node2": "ns2"},
        etcd=etcd,
    )
    cmd = member_command(c, "node2")
    assert cmd == etcd_command(
        members["node2"],
        data_dir=c.etcd_data_dir("node2"),
        initial="node1=https://10.1.0.1:2380,node2=https://10.1.0.2:2380",
        token="tok",
        heartbeat_ms=50,
        election_ms=500,
        netns="ns2",
        tls=MemberTls(TlsFiles.of(tmp_path / "etcd-tls", "member-node2")),
    )
    assert LocalEtcd.from_dict(etcd.to_dict(), "x") == etcd


def status(member_id: str, leader: str) -> dict[str, object]:
    return {"header": {"member_id": member_id}, "leader": leader}


def test_agreed_leader() -> None:
    both = {"a": status("11", "22"), "b": status("22", "22")}
    assert agreed_leader(both) == "b"
    assert agreed_leader({}) is None
    assert agreed_leader({**both, "c": None}) is None  # one does not answer
    assert agreed_leader({"a": status("11", "11"), "b": status("22", "22")}) is None  # disagree
    assert agreed_leader({"a": status("11", "0"), "b": status("22", "0")}) is None  # no leader yet
    assert agreed_leader({"a": status("11", "33")}) is None  # the leader is not among them


def test_stop_order_puts_the_leader_last() -> None:
    assert stop_order(["a", "b", "c"], "a") == ["b", "c", "a"]
    assert stop_order(["a", "b"], None) == ["a", "b"]
    assert stop_order(range(3), 1) == [0, 2, 1]


def test_cluster_json_carries_the_etcd_certificates(tmp_path: Path) -> None:
    nodes = {"node1": "tcp://10.1.0.1:7100"}
    url = "etcd://10.1.0.1:2379/c?timeout=1"
    c = ClusterConfig(root=tmp_path, cluster="c", nodes=nodes, store=url)
    assert any("no TLS" in p for p in c.store_problems())  # plain http is not taken silently
    c.etcd_tls = EtcdTlsPaths("etcd-tls/ca.pem", "etcd-tls/client.pem", "etcd-tls/client.key")
    assert any("not found" in p for p in c.store_problems())
    (tmp_path / "etcd-tls").mkdir()
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / "etcd-tls" / name).write_text("x")
    assert c.store_problems() == []
    u = parse_url(c.store_url)
    assert u.tls == tuple(str(tmp_path / "etcd-tls" / n) for n in ("ca.pem", "client.pem", "client.key"))
    assert u.timeout == 1.0 and c.store == url  # the file keeps the relative paths apart
    c.save()
    loaded = ClusterConfig.load(tmp_path)
    assert loaded.etcd_tls == c.etcd_tls and loaded.store_url == c.store_url
    # a URL that says insecure=1 is taken as it is
    c.etcd_tls, c.store = None, url + "&insecure=1"
    assert c.store_problems() == [] and parse_url(c.store_url).insecure


def test_a_cluster_json_of_before_tls_runs_plain_http_members() -> None:
    old = {"token": "t", "members": {"node1": {"host": "10.1.0.1", "client_port": 2379, "peer_port": 2380}}}
    e = LocalEtcd.from_dict(old, "x")
    assert not e.tls and e.members["node1"].client_url == "http://10.1.0.1:2379"
    assert (
        LocalEtcd.from_dict({**old, "tls": True}, "x").members["node1"].client_url == "https://10.1.0.1:2379"
    )
