"""What the bus does at rest (issue #17): heartbeats in step, few ZMTP pings, connections kept."""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from bus.messages import ApiReply, ApiRequest, Heartbeat
from bus.transport import TransportConfig
from tests.bus.conftest import Cluster, wait_until
from tests.bus.test_bus_transport import client_socket

MakeCluster = Callable[..., Cluster]


def test_heartbeats_go_out_on_the_wall_clock_grid(make_cluster: MakeCluster) -> None:
    # Every node sends at the multiples of the interval (wall clock), so a node's
    # peers' heartbeats arrive together. Node a is started half an interval off
    # the grid: before the change its heartbeats kept that phase.
    interval = 0.2
    c = make_cluster(2, curve=False, config=TransportConfig(heartbeat_interval=interval, peer_timeout=1.0))
    c.make("b").start()
    wait_until(lambda: abs(time.time() % interval - interval / 2) < 0.01, timeout=2, interval=0.001)
    c.make("a").start()
    rec = c.recorders["b"]
    wait_until(lambda: len(rec.bodies(Heartbeat)) >= 12, timeout=10)
    sent = [hb.sent_at for hb in rec.bodies(Heartbeat) if hb.node == "a"]  # type: ignore[attr-defined]
    phases = [min(t % interval, interval - t % interval) for t in sent]
    assert statistics.median(phases) < interval / 5, phases
    # SAFETY: never a longer gap than the interval (plus the loop's scheduling slack)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert max(gaps) < interval + 0.15, gaps  # slack for a loaded machine


def test_a_client_that_never_pings_keeps_its_connection(make_cluster: MakeCluster) -> None:
    # The ROUTER pings rarely (every peer_timeout); the TTL in its PINGs must
    # outlast the gap between two of them, or a client that sends nothing would
    # be disconnected between two PINGs.
    cfg = TransportConfig(heartbeat_interval=0.1, peer_timeout=0.5)  # ROUTER pings every 0.5 s
    c = make_cluster(2, config=cfg)
    c.start()
    a = c.nodes["a"]
    a.subscribe(lambda env: a.reply(env, ApiReply(env.body.request_id, True, {})), [ApiRequest])  # type: ignore[attr-defined]
    ctx = zmq.Context()
    try:
        s = client_socket(ctx, c, "cli", "a", b"cli-1")
        mon = s.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        events: list[int] = []
        deadline = time.monotonic() + 6 * cfg.peer_timeout
        while time.monotonic() < deadline:
            if mon.poll(50):
                events.append(recv_monitor_message(mon)["event"])
        assert events == [zmq.EVENT_HANDSHAKE_SUCCEEDED]
        s.send(a.codec.encode("cli", 1, ApiRequest("r1", "status", {})))
        assert s.poll(3000)
        assert a.codec.decode(s.recv()).body == ApiReply("r1", True, {})
        s.disable_monitor()
        mon.close(linger=0)
        s.close(linger=0)
    finally:
        ctx.destroy(linger=0)
