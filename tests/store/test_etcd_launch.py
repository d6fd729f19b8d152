"""The one etcd launcher: command line, initial state, leader agreement, stop order (no etcd needed)."""

from __future__ import annotations

from pathlib import Path

from admin.cluster import ClusterConfig, LocalEtcd
from cli.cluster_etcd import member_command
from store.etcd_launch import (
    EtcdMember,
    agreed_leader,
    etcd_command,
    initial_cluster,
    initial_state,
    stop_order,
)


def flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_command_line_carries_the_flags_pyha_relies_on(tmp_path: Path) -> None:
    a, b = EtcdMember("a", "10.0.0.1"), EtcdMember("b", "::1", 12379, 12380)
    assert b.endpoint == "[::1]:12379" and b.peer_url == "http://[::1]:12380"
    initial = initial_cluster([a, b])
    assert initial == "a=http://10.0.0.1:2380,b=http://[::1]:12380"
    cmd = etcd_command(a, data_dir=tmp_path / "a.etcd", initial=initial, token="t1", netns="ns-a")
    assert cmd[:5] == ["ip", "netns", "exec", "ns-a", "etcd"]
    assert flag(cmd, "--listen-client-urls") == flag(cmd, "--advertise-client-urls") == "http://10.0.0.1:2379"
    assert flag(cmd, "--listen-peer-urls") == "http://10.0.0.1:2380"
    assert flag(cmd, "--initial-cluster") == initial and flag(cmd, "--initial-cluster-token") == "t1"
    assert "--pre-vote=true" in cmd
    assert flag(cmd, "--auto-compaction-mode") == "revision"
    assert (flag(cmd, "--heartbeat-interval"), flag(cmd, "--election-timeout")) == ("100", "1000")
    # a member that wrote its data dir rejoins; a fresh one bootstraps
    assert flag(cmd, "--initial-cluster-state") == "new"
    (tmp_path / "a.etcd" / "member").mkdir(parents=True)
    assert initial_state(tmp_path / "a.etcd") == "existing"
    cmd = etcd_command(a, data_dir=tmp_path / "a.etcd", initial=initial, token="t1", binary="/opt/etcd")
    assert cmd[0] == "/opt/etcd" and flag(cmd, "--initial-cluster-state") == "existing"


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
        initial="node1=http://10.1.0.1:2380,node2=http://10.1.0.2:2380",
        token="tok",
        heartbeat_ms=50,
        election_ms=500,
        netns="ns2",
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
