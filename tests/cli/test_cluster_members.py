"""``ha-cluster add-node``/``remove-node`` refusals, and how a node follows cluster.json (issue #15).

No node runs here: the refusals come before anything changes; the running
cluster's side is tests/live/test_membership_live.py.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from click.testing import CliRunner

from actors.events import EventPublisher
from actors.members import MembershipFollower
from admin.cluster import ClusterConfig
from admin.member_records import publish_member_version, read_member_up
from bus.keys import CurveKeys, generate
from bus.membership import Membership
from cli.cluster_members import wait_connected
from cli.ha_cluster import main

Applied = list[tuple[ClusterConfig, Membership, CurveKeys | None]]


def ha_cluster(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.output


@pytest.fixture
def three(tmp_path: Path) -> Path:
    d = tmp_path / "c"
    code, out = ha_cluster("init", str(d), "--nodes", "3")
    assert code == 0, out
    return d


def test_add_node_is_refused_while_the_running_members_are_no_majority_of_the_new_list(three: Path) -> None:
    code, out = ha_cluster("add-node", str(three))
    assert code == 4
    assert "only 0 of 3 members run; 4 members need 3 for quorum: start the stopped members first" in out
    conf = ClusterConfig.load(three)
    assert sorted(conf.nodes) == ["node1", "node2", "node3"] and conf.config_version == 1
    assert not (three / "keys" / "node4.key").exists()


def test_add_node_refuses_bad_and_taken_names(three: Path) -> None:
    assert ha_cluster("add-node", str(three), "node2")[0] == 2
    code, out = ha_cluster("add-node", str(three), "Bad_Name")
    assert code == 2 and "invalid node name" in out


def test_remove_node_refusals(tmp_path: Path, three: Path) -> None:
    code, out = ha_cluster("remove-node", str(three), "node9")
    assert code == 2 and "no such node 'node9'" in out
    code, out = ha_cluster("remove-node", str(three), "node3")
    assert code == 4 and "fewer than the 2 that 3 members need" in out
    two = tmp_path / "two"
    assert ha_cluster("init", str(two), "--nodes", "2")[0] == 0
    code, out = ha_cluster("remove-node", str(two), "node2")
    assert code == 4 and "a 2-node cluster cannot shrink online" in out
    assert ClusterConfig.load(three).config_version == 1


# -- the node's side: actors/members.py ---------------------------------------------------------


def _write(conf: ClusterConfig, nodes: dict[str, str], version: int) -> None:
    conf.nodes, conf.config_version = nodes, version
    conf.save()
    # the follower looks at mtime and inode: a rewrite within the same clock tick still counts
    os.utime(conf.root / "cluster.json", ns=(0, version * 10**9))


@pytest.fixture
def follower(tmp_path: Path) -> tuple[ClusterConfig, MembershipFollower, Applied]:
    nodes = {f"n{i}": f"tcp://127.0.0.1:{5000 + i}" for i in (1, 2, 3)}
    conf = ClusterConfig(root=tmp_path, cluster="t", nodes=dict(nodes), curve=False)
    conf.save()
    applied: Applied = []
    f = MembershipFollower(conf, "n1", lambda *a: applied.append(a))
    assert f.check() is False and applied == []  # the members it started with
    return conf, f, applied


def test_the_follower_applies_one_member_added_then_removed(
    follower: tuple[ClusterConfig, MembershipFollower, Applied],
) -> None:
    conf, f, applied = follower
    four = {**conf.nodes, "n4": "tcp://127.0.0.1:5004"}
    _write(conf, four, 2)
    assert f.check() is True and f.check() is False  # once
    new, membership, keys = applied[-1]
    assert membership.names == ("n1", "n2", "n3", "n4") and new.config_version == 2 and keys is None
    _write(conf, {n: e for n, e in four.items() if n != "n2"}, 3)
    assert f.check() is True
    assert applied[-1][1].names == ("n1", "n3", "n4") and f.version == 3


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda n: {**n, "n4": "tcp://127.0.0.1:5004", "n5": "tcp://127.0.0.1:5005"}, "one member at a time"),
        (lambda n: {"n1": n["n1"], "n2": n["n2"], "n4": "tcp://127.0.0.1:5004"}, "one member at a time"),
        (lambda n: {k: v for k, v in n.items() if k != "n1"}, "this node is not listed"),
        (lambda n: {**n, "n2": "tcp://127.0.0.1:6002"}, "the endpoint of member n2 changed"),
    ],
)
def test_the_follower_keeps_the_old_members_on_an_unsafe_change(
    follower: tuple[ClusterConfig, MembershipFollower, Applied],
    change: object,
    why: str,
) -> None:
    conf, f, applied = follower
    old = dict(conf.nodes)
    assert callable(change)
    _write(conf, change(old), 2)
    assert why in str(f._problem(ClusterConfig.load(conf.root)))
    assert f.check() is False and applied == [] and f.nodes == old


def test_the_follower_waits_for_a_new_members_key(tmp_path: Path) -> None:
    code, out = ha_cluster("init", str(tmp_path / "c"), "--nodes", "3")
    assert code == 0, out
    conf = ClusterConfig.load(tmp_path / "c")
    applied: Applied = []
    f = MembershipFollower(conf, "node1", lambda *a: applied.append(a))
    raw = json.loads((conf.root / "cluster.json").read_text())
    raw["nodes"]["node4"] = {"endpoint": "tcp://127.0.0.1:1"}
    raw["config_version"] = 2
    (conf.root / "cluster.json").write_text(json.dumps(raw))
    assert f.check() is False and applied == []  # no node4.key yet: retried
    generate(conf.keys_dir, "node4")
    assert f.check() is True
    _, membership, keys = applied[0]
    assert keys is not None and "node4" in keys.authorized and "node4" in membership


class Node3Listener:
    """node1's event publisher over a new 3-node cluster, and subscribers with node3's key."""

    def __init__(self, root: Path) -> None:
        assert ha_cluster("init", str(root), "--nodes", "3")[0] == 0
        self.conf = ClusterConfig.load(root)
        self.store = self.conf.open_store()
        self.pub = EventPublisher("node1", self.conf, self.store, lambda: True, interval=0.02, heartbeat=0.1)
        self.pub.start()
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.node3 = CurveKeys.load(self.conf.keys_dir, "node3")
        self.socks: list[zmq.Socket[bytes]] = []

    def heard(self, wait: float, *, stay: bool = True) -> bool:
        """A new subscriber with node3's key gets a heartbeat within ``wait`` seconds
        (``stay=False``: and leaves right after)."""
        sub = self.ctx.socket(zmq.SUB)
        self.socks.append(sub)
        try:
            sub.setsockopt(zmq.CURVE_SERVERKEY, self.node3.public_of("node1"))
            sub.setsockopt(zmq.CURVE_PUBLICKEY, self.node3.public)
            sub.setsockopt(zmq.CURVE_SECRETKEY, self.node3.secret)
            sub.setsockopt(zmq.SUBSCRIBE, b"heartbeat")
            assert self.pub.endpoint is not None
            sub.connect(self.pub.endpoint)
            return bool(sub.poll(int(wait * 1000)))
        finally:
            if not stay:
                sub.close(linger=0)

    def close(self) -> None:
        for s in self.socks:
            s.close(linger=0)
        self.ctx.term()
        self.pub.stop()
        self.store.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Node3Listener]:
    node = Node3Listener(tmp_path / "c")
    try:
        yield node
    finally:
        node.close()


def test_the_event_stream_stops_accepting_a_removed_members_key(listener: Node3Listener) -> None:
    """actors/events.py pins the members' keys; a member that left is unpinned (issue #15)."""
    assert listener.heard(5)
    (listener.conf.keys_dir / "node3.key").unlink()
    time.sleep(1.5)
    assert listener.heard(5), "a member's key stays accepted while it is a member"
    conf = listener.conf
    conf.nodes = {n: e for n, e in conf.nodes.items() if n != "node3"}  # as actors/node.py does
    time.sleep(1.5)
    assert not listener.heard(1.5), "the key of a member that left is refused"


def test_a_publisher_nobody_listens_to_refuses_a_removed_members_key_at_once(listener: Node3Listener) -> None:
    """Issue #17: with no subscriber its thread sleeps (no keys timer); the ZAP request itself
    makes it follow the membership, so the first connection after a removal is refused."""
    assert listener.heard(5, stay=False)
    time.sleep(0.3)  # the subscriber left: nobody listens
    conf = listener.conf
    (conf.keys_dir / "node3.key").unlink()
    conf.nodes = {n: e for n, e in conf.nodes.items() if n != "node3"}  # as actors/node.py does
    assert not listener.heard(1.5, stay=False), "the key of a member that left is refused"


def test_add_node_waits_until_every_member_counts_the_new_majority_up(three: Path) -> None:
    """A member whose bus does not see enough of the others yet (CI: node3 had not heard node2's
    first heartbeat 0.5 s after the start) would lose quorum, and stop petting its watchdog, the
    moment it counted votes by the longer list: add-node waits for every member's own view."""
    conf = ClusterConfig.load(three)
    store = conf.open_store()
    try:
        running = ["node1", "node2", "node3"]
        publish_member_version(store, "node1", 1, running, ["node1", "node2", "node3"])
        publish_member_version(store, "node2", 1, running, ["node1", "node2", "node3"])
        publish_member_version(store, "node3", 1, running, ["node1", "node3"])  # quorate of 3, not of 4
        assert read_member_up(store, "node3") == ["node1", "node3"]
        assert wait_connected(store, running, 2, timeout=0.1) == {}  # enough for 3 members
        assert wait_connected(store, running, 3, timeout=0.3) == {"node3": ["node1", "node3"]}
        # the view a node published before it counted any (an older node): not enough
        publish_member_version(store, "node2", 1, running)
        assert wait_connected(store, running, 3, timeout=0.1) == {"node2": None, "node3": ["node1", "node3"]}

        def later() -> None:
            time.sleep(0.3)
            publish_member_version(store, "node2", 1, running, running)
            publish_member_version(store, "node3", 1, running, running)

        t = threading.Thread(target=later)
        t.start()
        t0 = time.monotonic()
        assert wait_connected(store, running, 3, timeout=10) == {}
        assert 0.25 < time.monotonic() - t0 < 5
        t.join()
    finally:
        store.close()
