"""Transport contract, on real ZeroMQ sockets over loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgpack  # type: ignore[import-untyped]
import pytest
import zmq
from loguru import logger

from bus.codec import Envelope
from bus.errors import BusError, ConfigError, UnknownPeerError
from bus.keys import CurveKeys, generate
from bus.membership import Membership
from bus.messages import (
    Ack,
    ApiReply,
    ApiRequest,
    CommandResult,
    PeerDown,
    PeerUp,
    QuorumLost,
    QuorumRegained,
    ServiceCommand,
)
from bus.reliability import Outbox
from bus.transport import Transport, TransportConfig
from tests.bus.conftest import FAST, Cluster, Recorder, wait_until

MakeCluster = Callable[..., Cluster]


def cmd(uid: str, node: str = "b") -> ServiceCommand:
    return ServiceCommand(sid="vm:100", uid=uid, state="started", node=node)


def test_messages_arrive_in_order_per_peer(make_cluster: MakeCluster) -> None:
    c = make_cluster(3)
    c.start()
    wait_until(c.full_mesh)
    n = 3000
    for i in range(n):
        assert c.nodes["a"].send("b", cmd(str(i)))
        if i % 2:
            assert c.nodes["c"].send("b", cmd(f"c{i}"))
    rec = c.recorders["b"]
    wait_until(lambda: len(rec.of(ServiceCommand)) == n + n // 2)
    from_a = [e.body.uid for e in rec.of(ServiceCommand) if e.sender == "a"]  # type: ignore[attr-defined]
    assert from_a == [str(i) for i in range(n)]
    ids = [e.msg_id for e in rec.of(ServiceCommand) if e.sender == "a"]
    assert ids == sorted(ids)
    a_stats, b_stats = c.nodes["a"].stats(), c.nodes["b"].stats()
    assert b_stats.get("rejected.spoofed_sender", 0) == 0
    # The per-frame counters (heartbeats and local events come on top).
    assert a_stats["sent"] >= n
    assert b_stats["received"] >= n + n // 2 and b_stats["delivered"] >= b_stats["received"]


def test_broadcast_reaches_every_peer_and_self_send_is_local(make_cluster: MakeCluster) -> None:
    c = make_cluster(3)
    c.start()
    wait_until(c.full_mesh)
    assert c.nodes["a"].broadcast(cmd("u-all"))
    assert c.nodes["a"].send("a", cmd("u-self", "a"))
    wait_until(lambda: all(len(c.recorders[n].of(ServiceCommand)) == 1 for n in ("b", "c")))
    wait_until(lambda: len(c.recorders["a"].of(ServiceCommand)) == 1)
    assert c.recorders["a"].bodies(ServiceCommand) == [cmd("u-self", "a")]
    with pytest.raises(UnknownPeerError):
        c.nodes["a"].send("zz", cmd("x"))


def test_reconnect_after_peer_restart(make_cluster: MakeCluster) -> None:
    c = make_cluster(3)
    c.start()
    wait_until(c.full_mesh)
    old_incarnation = c.nodes["b"].incarnation
    c.stop("b")
    # Sends to a stopped peer are dropped at once, never queued for later.
    wait_until(lambda: not c.nodes["a"].send("b", cmd("lost")))
    assert c.nodes["a"].stats()["dropped.unreachable"] >= 1
    b2 = c.make("b")
    b2.start()
    a_rec = c.recorders["a"]
    wait_until(lambda: any(u.node == "b" and u.incarnation == b2.incarnation for u in a_rec.bodies(PeerUp)))  # type: ignore[attr-defined]
    assert b2.incarnation != old_incarnation
    assert c.nodes["a"].send("b", cmd("after-restart"))
    wait_until(lambda: c.recorders["b"].bodies(ServiceCommand) == [cmd("after-restart")])
    # ...and the restarted node reaches us too (ROUTER_HANDOVER took the old identity over).
    assert b2.send("a", CommandResult("vm:100", "after-restart", 0))
    wait_until(lambda: len(a_rec.of(CommandResult)) == 1)
    assert "lost" not in [m.uid for m in c.recorders["b"].bodies(ServiceCommand)]  # type: ignore[attr-defined]


class Lrm:
    """A minimal UID-protocol receiver: each command gets a result, re-sent until acknowledged."""

    def __init__(self, t: Transport, master: str) -> None:
        self.t, self.master = t, master
        self.outbox = Outbox(t.send, retry_interval=0.1)
        self.outbox.attach(t.subscribe)
        self.executed: list[str] = []
        t.subscribe(self.on_command, [ServiceCommand])

    def on_command(self, env: Envelope) -> None:
        body = env.body
        assert isinstance(body, ServiceCommand)
        self.executed.append(body.uid)
        self.outbox.put(self.master, body.uid, CommandResult(body.sid, body.uid, 0, "ok"))


def test_results_are_resent_until_acknowledged(make_cluster: MakeCluster) -> None:
    c = make_cluster(2)
    c.start()
    wait_until(c.full_mesh)
    lrm = Lrm(c.nodes["b"], "a")
    seen: list[str] = []

    def stubborn_master(env: Envelope) -> None:
        assert isinstance(env.body, CommandResult)
        seen.append(env.body.uid)
        if len(seen) >= 3:  # ignore the first two copies, as if they were lost
            c.nodes["a"].reply(env, Ack(env.body.uid))

    c.nodes["a"].subscribe(stubborn_master, [CommandResult])
    c.nodes["a"].send("b", cmd("u7"))
    wait_until(lambda: not lrm.outbox.pending() and lrm.executed == ["u7"])
    assert seen[:3] == ["u7", "u7", "u7"]
    assert lrm.executed == ["u7"]


def test_results_are_resent_after_the_receiver_comes_back(make_cluster: MakeCluster) -> None:
    c = make_cluster(2)
    c.start()
    wait_until(c.full_mesh)
    outbox = Outbox(c.nodes["b"].send, retry_interval=10.0)  # only PeerUp may trigger the re-send
    outbox.attach(c.nodes["b"].subscribe)
    c.stop("a")
    wait_until(lambda: not c.nodes["b"].peers_up())
    assert not outbox.put("a", "u9", CommandResult("vm:100", "u9", 0))  # dropped: a is gone
    a2 = c.make("a")
    got = Recorder()
    a2.subscribe(got, [CommandResult])
    a2.subscribe(lambda env: a2.reply(env, Ack(env.body.uid)), [CommandResult])  # type: ignore[attr-defined]
    a2.start()
    wait_until(lambda: not outbox.pending())
    assert got.bodies(CommandResult) == [CommandResult("vm:100", "u9", 0)]
    assert outbox.attempts("u9") == 0


def test_a_peer_reported_up_can_be_sent_to_at_once(make_cluster: MakeCluster) -> None:
    # The cause of the flaky resend test above (issue #10): PeerUp promises that
    # our link to the peer works, and the Outbox re-sends on it at once. libzmq
    # attaches a connection's pipe to a DEALER only when the DEALER processes its
    # commands, and send() does that at most once per ~1 ms (a TSC throttle), so
    # a send within ~1 ms of the previous one (a heartbeat) hit EAGAIN with
    # IMMEDIATE and was dropped. Heartbeats every 1 ms make that window the rule:
    # 5 nodes give 20 PeerUps, about half of which were dropped before the fix.
    cfg = TransportConfig(heartbeat_interval=0.001, peer_timeout=0.5)
    c = make_cluster(5, config=cfg)
    sent: list[tuple[str, str, bool]] = []
    for name in c.names:
        t = c.make(name)

        def resend(env: Envelope, t: Transport = t) -> None:
            peer = env.body.node  # type: ignore[attr-defined]
            sent.append((t.node, peer, t.send(peer, CommandResult("vm:100", f"{t.node}-{peer}", 0))))

        t.subscribe(resend, [PeerUp])
    for t in c.nodes.values():
        t.start()
    wait_until(lambda: len(sent) == 20)
    assert [s for s in sent if not s[2]] == []
    for name in c.names:
        rec = c.recorders[name]
        wait_until(lambda rec=rec: len(rec.of(CommandResult)) == 4)  # type: ignore[misc]


def test_peer_loss_is_detected_within_the_timeout(make_cluster: MakeCluster) -> None:
    cfg = TransportConfig(heartbeat_interval=0.05, peer_timeout=0.5)
    c = make_cluster(3, config=cfg)
    c.start()
    wait_until(c.full_mesh)
    c.recorders["a"].items.clear()
    t0 = time.monotonic()
    c.stop("c")
    rec = c.recorders["a"]
    wait_until(lambda: rec.bodies(PeerDown), timeout=3)
    detected = time.monotonic() - t0
    # Heartbeats are the only liveness signal: loss is reported no earlier
    # than timeout minus one heartbeat, and no later than timeout plus slack.
    assert cfg.peer_timeout - cfg.heartbeat_interval - 0.02 <= detected <= cfg.peer_timeout + 0.25
    assert rec.bodies(PeerDown) == [PeerDown("c")]
    assert c.nodes["a"].quorate and not rec.of(QuorumLost)


def quorum_events(rec: Recorder) -> list[bool]:
    return [
        isinstance(e.body, QuorumRegained)
        for e in rec.items
        if isinstance(e.body, QuorumLost | QuorumRegained)
    ]


def test_quorum_transitions_three_nodes(make_cluster: MakeCluster) -> None:
    c = make_cluster(3)
    c.start()
    wait_until(c.all_quorate)
    c.stop("c")
    wait_until(lambda: c.nodes["a"].peers_up() == {"b"} and c.nodes["b"].peers_up() == {"a"})
    assert c.all_quorate(("a", "b"))
    c.stop("b")
    wait_until(lambda: not c.nodes["a"].quorate)
    assert quorum_events(c.recorders["a"]) == [True, False]
    assert c.recorders["a"].bodies(QuorumLost) == [QuorumLost("a", ("a",))]
    c.make("b").start()
    wait_until(lambda: c.nodes["a"].quorate)
    assert quorum_events(c.recorders["a"]) == [True, False, True]
    assert c.recorders["a"].bodies(QuorumRegained)[-1] == QuorumRegained("a", ("a", "b"))


def test_quorum_transitions_five_nodes(make_cluster: MakeCluster) -> None:
    c = make_cluster(5)
    c.start()
    wait_until(c.full_mesh)
    c.stop("e")
    c.stop("d")
    wait_until(lambda: c.full_mesh(("a", "b", "c")))
    assert c.all_quorate(("a", "b", "c"))  # 3 of 5
    c.stop("c")
    wait_until(lambda: not c.nodes["a"].quorate and not c.nodes["b"].quorate)  # 2 of 5
    for n in ("a", "b"):
        assert quorum_events(c.recorders[n]) == [True, False]
        assert c.recorders[n].bodies(QuorumLost) == [QuorumLost(n, ("a", "b"))]


def test_expected_votes_override(make_cluster: MakeCluster) -> None:
    c = make_cluster(5, config=TransportConfig(heartbeat_interval=0.05, peer_timeout=0.3, expected_votes=3))
    c.start("a", "b")
    wait_until(lambda: c.all_quorate(("a", "b")))  # 2 of 3 expected votes


def test_curve_refuses_unknown_key(make_cluster: MakeCluster, tmp_path: Path) -> None:
    c = make_cluster(2)
    c.start()
    wait_until(c.full_mesh)
    # A rogue node knows the members' public keys (they are public) but its
    # own key is not in their directory.
    for n in ("a", "b"):
        (tmp_path / f"{n}.key").write_bytes((c.key_dir / f"{n}.key").read_bytes())
    generate(tmp_path, "c")
    rogue_membership = Membership.of(
        [*((p.name, p.endpoint) for p in c.membership), ("c", "tcp://127.0.0.1:1")]
    )
    rogue = Transport("c", rogue_membership, cluster="test", keys=CurveKeys.load(tmp_path, "c"), config=FAST)
    try:
        rogue.start()
        for _ in range(20):
            rogue.broadcast(cmd("evil"))
            time.sleep(0.01)
        wait_until(lambda: c.nodes["a"].stats().get("auth_denied", 0) >= 1)
        assert not c.recorders["a"].of(ServiceCommand) and not c.recorders["b"].of(ServiceCommand)
        assert "c" not in c.nodes["a"].peers_up()
    finally:
        rogue.stop()


def test_curve_refuses_plaintext_peer(make_cluster: MakeCluster) -> None:
    c = make_cluster(2)
    c.start()
    ctx = zmq.Context()
    try:
        d = ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.setsockopt(zmq.ROUTING_ID, b"b")
        d.connect(c.membership.endpoint("a"))
        frame = c.nodes["b"].codec.encode("b", 1, cmd("plain"))
        d.send(frame)
        wait_until(lambda: c.nodes["a"].stats().get("handshake_failed", 0) >= 1)
        d.close()
    finally:
        ctx.destroy(linger=0)
    assert not c.recorders["a"].of(ServiceCommand)


def client_socket(
    ctx: zmq.Context[zmq.Socket[bytes]], c: Cluster, name: str, node: str, routing_id: bytes
) -> zmq.Socket[bytes]:
    keys = CurveKeys.load(c.key_dir, name)
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.ROUTING_ID, routing_id)
    s.curve_serverkey = keys.public_of(node)
    s.curve_publickey = keys.public
    s.curve_secretkey = keys.secret
    s.connect(c.membership.endpoint(node))
    return s


def test_api_request_reply_with_an_authorised_client(make_cluster: MakeCluster) -> None:
    c = make_cluster(2)
    c.start()
    a = c.nodes["a"]
    a.subscribe(
        lambda env: a.reply(env, ApiReply(env.body.request_id, True, {"echo": env.body.args})),  # type: ignore[attr-defined]
        [ApiRequest],
    )
    ctx = zmq.Context()
    try:
        s = client_socket(ctx, c, "cli", "a", b"cli-1")
        s.send(a.codec.encode("cli", 1, ApiRequest("r1", "status", {"x": 1})))
        assert s.poll(3000)
        env = a.codec.decode(s.recv())
        assert env.body == ApiReply("r1", True, {"echo": {"x": 1}})
        # Clients may only make API requests.
        s.send(a.codec.encode("cli", 2, cmd("nope")))
        wait_until(lambda: a.rejected().get("not_a_member", 0) == 1)
        s.close()
    finally:
        ctx.destroy(linger=0)
    assert not c.recorders["a"].of(ServiceCommand)


def test_a_valid_key_cannot_speak_for_another_node(make_cluster: MakeCluster) -> None:
    c = make_cluster(3)
    c.start("a")
    a = c.nodes["a"]
    ctx = zmq.Context()
    try:
        # b's genuine key, but claiming to be c (routing id and envelope both).
        s = client_socket(ctx, c, "b", "a", b"c")
        s.send(a.codec.encode("c", 1, cmd("forged")))
        # ...or a client key claiming to be a member.
        s2 = client_socket(ctx, c, "cli", "a", b"b")
        s2.send(a.codec.encode("b", 1, cmd("forged2")))
        wait_until(lambda: a.rejected().get("spoofed_sender", 0) == 2)
        s.close()
        s2.close()
    finally:
        ctx.destroy(linger=0)
    assert not c.recorders["a"].of(ServiceCommand)


def test_subscriber_exceptions_are_contained(make_cluster: MakeCluster) -> None:
    c = make_cluster(2)
    c.start()
    wait_until(c.full_mesh)

    def boom(env: Envelope) -> None:
        raise RuntimeError("subscriber bug")

    c.nodes["b"].subscribe(boom, [ServiceCommand])
    c.nodes["a"].send("b", cmd("u1"))
    c.nodes["a"].send("b", cmd("u2"))
    wait_until(lambda: len(c.recorders["b"].of(ServiceCommand)) == 2)
    assert c.nodes["b"].stats()["handler_error"] == 2
    assert c.nodes["b"].peers_up() == {"a"}


def test_unsubscribe_and_send_from_many_threads(make_cluster: MakeCluster) -> None:
    c = make_cluster(2, curve=False)
    c.start()
    wait_until(c.full_mesh)
    rec = Recorder()
    sub = c.nodes["b"].subscribe(rec, [ServiceCommand])

    def worker(k: int) -> None:
        for i in range(200):
            c.nodes["a"].send("b", cmd(f"{k}-{i}"))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_until(lambda: len(rec.items) == 800)
    for k in range(4):  # per sending thread, order holds
        mine = [e.body.uid for e in rec.items if e.body.uid.startswith(f"{k}-")]  # type: ignore[attr-defined]
        assert mine == [f"{k}-{i}" for i in range(200)]
    sub.cancel()
    c.nodes["a"].send("b", cmd("late"))
    wait_until(lambda: any(e.body.uid == "late" for e in c.recorders["b"].of(ServiceCommand)))  # type: ignore[attr-defined]
    assert len(rec.items) == 800


def test_stop_is_clean_and_idempotent(make_cluster: MakeCluster) -> None:
    c = make_cluster(2)
    c.start()
    before = threading.active_count()
    t = c.nodes["a"]
    t.stop()
    t.stop()
    assert threading.active_count() == before - 1
    assert t.send("b", cmd("after-stop")) is False
    assert t.stats()["dropped.closed"] == 1


def test_bad_configuration_is_refused(key_dir: Path) -> None:
    m = Membership.of([("a", "tcp://127.0.0.1:1"), ("b", "tcp://127.0.0.1:2")])
    with pytest.raises(ConfigError):
        Transport("zz", m, cluster="t", curve=False)
    with pytest.raises(ConfigError):
        Transport("a", m, cluster="t")  # curve without keys
    with pytest.raises(ConfigError):
        Transport("a", m, cluster="t", keys=CurveKeys.load(key_dir, "b"))
    with pytest.raises(ConfigError):
        TransportConfig(heartbeat_interval=1.0, peer_timeout=0.5)
    t = Transport("a", m, cluster="t", curve=False)
    with pytest.raises(BusError):
        t.send("b", cmd("not-started"))


def test_bind_failure_is_reported(make_cluster: MakeCluster) -> None:
    c = make_cluster(2, curve=False)
    c.start("a")
    clash = Transport("a", c.membership, cluster="test", curve=False, config=FAST)
    with pytest.raises(BusError, match="cannot open"):
        clash.start()


def test_raw_frames_with_wrong_framing_are_counted(make_cluster: MakeCluster) -> None:
    c = make_cluster(2, curve=False)
    c.start("a")
    ctx = zmq.Context()
    try:
        d = ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.setsockopt(zmq.ROUTING_ID, b"b")
        d.connect(c.membership.endpoint("a"))
        d.send_multipart([b"x", b"y"])
        d.send(msgpack.packb({"v": 2}))
        d.send(b"\xc1")
        wait_until(lambda: sum(c.nodes["a"].rejected().values()) == 3)
        d.close()
    finally:
        ctx.destroy(linger=0)
    assert c.nodes["a"].rejected() == {"bad_framing": 1, "bad_envelope": 1, "malformed": 1}


def test_two_nodes_with_tie_breaker(make_cluster: MakeCluster) -> None:
    cfg = TransportConfig(heartbeat_interval=0.05, peer_timeout=0.3, tie_breaker=True)
    c = make_cluster(2, config=cfg)
    c.start()
    wait_until(c.full_mesh)
    c.stop("a")  # the lowest name leaves: b must not claim the cluster
    wait_until(lambda: not c.nodes["b"].quorate)
    assert c.recorders["b"].bodies(QuorumLost) == [QuorumLost("b", ("b",))]
    c.make("a").start()
    wait_until(lambda: c.nodes["b"].quorate)
    c.stop("b")  # the other one leaves: a keeps quorum alone
    wait_until(lambda: c.nodes["a"].peers_up() == frozenset())
    assert c.nodes["a"].quorate


def test_rejections_are_logged_at_most_once_per_peer_and_reason(make_cluster: MakeCluster) -> None:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING", format="{message}")
    c = make_cluster(2, curve=False)
    c.start("a")
    ctx = zmq.Context()
    try:
        d = ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.setsockopt(zmq.ROUTING_ID, b"b")
        d.connect(c.membership.endpoint("a"))
        for _ in range(200):
            d.send(b"\xc1")
        d.send(msgpack.packb([1]))
        wait_until(lambda: sum(c.nodes["a"].rejected().values()) == 201)
    finally:
        ctx.destroy(linger=0)
        logger.remove(sink)
    rejected = [line for line in lines if "rejected frame from 'b'" in line]
    assert len(rejected) == 2  # one per (peer, reason), not 201
    assert c.nodes["a"].rejected() == {"malformed": 200, "bad_envelope": 1}


def test_reply_to_a_vanished_client_is_counted_not_lost_silently(make_cluster: MakeCluster) -> None:
    c = make_cluster(2)
    c.start("a")
    a = c.nodes["a"]
    requests = Recorder()
    a.subscribe(requests, [ApiRequest])
    ctx = zmq.Context()
    try:
        s = client_socket(ctx, c, "cli", "a", b"cli-gone")
        s.send(a.codec.encode("cli", 1, ApiRequest("r1", "status")))
        wait_until(lambda: requests.items)
        s.close()
    finally:
        ctx.destroy(linger=0)
    env = requests.items[0]

    def unroutable() -> bool:
        a.reply(env, ApiReply("r1", True))
        return a.stats().get("dropped.unroutable", 0) >= 1

    wait_until(unroutable)


def test_a_client_with_a_member_routing_id_cannot_displace_the_member(make_cluster: MakeCluster) -> None:
    """Issue #11: a client key reconnecting in a loop under a member's name must not cut that member off.

    Before, member DEALERs used their name as routing id and the ROUTER allowed handover, so a
    client connecting as "b" took b's slot: b's heartbeats to a were lost, b was declared down
    (and, in a live cluster, fenced).
    """
    c = make_cluster(3)
    c.start()
    wait_until(c.full_mesh)
    a = c.nodes["a"]
    ctx = zmq.Context()
    try:
        deadline = time.monotonic() + 2.0  # several peer timeouts (FAST: 0.3 s)
        n = 0
        while time.monotonic() < deadline:
            s = client_socket(ctx, c, "cli", "a", b"b")
            s.send(a.codec.encode("cli", n, ApiRequest(f"r{n}", "status", {})))
            time.sleep(0.02)
            s.close()
            n += 1
    finally:
        ctx.destroy(linger=0)
    assert c.recorders["a"].bodies(PeerDown) == [], "the client cut member b off"
    assert "b" in a.peers_up()


def test_peers_are_up_as_soon_as_their_links_are_not_at_the_next_heartbeat(make_cluster: MakeCluster) -> None:
    """A node greets a peer with a heartbeat the moment its link to it is up. Before, a peer
    counted up only at the next heartbeat tick (up to ``heartbeat_interval`` later): CI saw a
    node, 0.6 s after the start, not yet count a peer whose link was up, and lose quorum when a
    fourth member was added. With heartbeats 30 s apart, only the greeting can make the mesh."""
    cfg = TransportConfig(heartbeat_interval=30.0, peer_timeout=90.0, zmtp_ping_interval=90.0)
    c = make_cluster(3, config=cfg)
    c.start()
    wait_until(c.full_mesh, timeout=10)
    assert c.all_quorate()
