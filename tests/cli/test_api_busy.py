"""The API's bounded mailbox (docs/API.md "Busy", issue #11).

A node hands each request to its API actor only while the client has fewer
than its share pending; over it, the request is answered at once with code 6,
reason ``busy``, from the bus thread, and nothing runs. The handoff tested is
the node's own (``Node._on_bus``), with a real API actor held busy.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from actors.api import ApiActor, ApiQueue, Request
from actors.node import NodeRuntime as Node
from admin.cluster import ClusterConfig
from bus.codec import Envelope
from bus.messages import ApiReply, ApiRequest
from cli.api_client import ApiClient, ApiError
from store.dirstore import DirStore

pytestmark = pytest.mark.timeout(60)
GATE = threading.Event()


class SlowApiActor(ApiActor):
    def _receive(self, message: object) -> None:
        if isinstance(message, Request):
            GATE.wait(20)  # an operation that takes its time: requests pile up behind it
        super()._receive(message)


def env(user: str, rid: str) -> Envelope:
    return Envelope(1, "c", "tool", "api_request", 1, ApiRequest(rid, "info", {}), b"\x00ab", user)


def test_over_its_share_a_client_gets_busy_at_once_and_others_are_still_served(tmp_path: Path) -> None:
    replies: list[ApiReply] = []
    lock = threading.Lock()

    def reply(e: Envelope, r: ApiReply) -> None:
        with lock:
            replies.append(r)

    def answered(rid: str) -> ApiReply | None:
        with lock:
            return next((r for r in replies if r.request_id == rid), None)

    cluster = ClusterConfig(root=tmp_path, cluster="c", nodes={"n1": "tcp://127.0.0.1:1"}, curve=False)
    queue = ApiQueue(per_client=2, total=3)
    GATE.clear()
    actor = SlowApiActor.start(
        "n1", ["n1"], DirStore(tmp_path / "store"), lambda: True, reply, cluster=cluster, queue=queue
    )
    node: Any = SimpleNamespace(
        node="n1",
        ctx=SimpleNamespace(last_seen={}),
        api_queue=queue,
        api=actor,
        bus=SimpleNamespace(reply=reply),
    )
    try:
        for rid in ("a1", "a2", "a3"):
            Node._on_bus(node, env("admin/flood", rid))
        busy = answered("a3")
        assert busy is not None, "the request over the client's share is answered at once"
        assert not busy.ok and busy.result == {"code": 6, "reason": "busy", "details": []}
        assert "n1 is busy" in str(busy.error) and "\n" not in str(busy.error)
        Node._on_bus(node, env("readonly/other", "b1"))  # another client: its own share
        Node._on_bus(node, env("readonly/third", "c1"))  # but the mailbox holds 3 in all
        assert answered("b1") is None
        full = answered("c1")
        assert full is not None and full.result["reason"] == "busy"
        GATE.set()
        deadline = time.monotonic() + 10
        while not all(answered(r) for r in ("a1", "a2", "b1")) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert all(answered(r).ok for r in ("a1", "a2", "b1"))  # type: ignore[union-attr]
        Node._on_bus(node, env("admin/flood", "a4"))  # its share is free again
        deadline = time.monotonic() + 10
        while answered("a4") is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert answered("a4") is not None and answered("a4").ok  # type: ignore[union-attr]
        assert queue.refused == 2
    finally:
        GATE.set()
        actor.stop()


def test_a_busy_node_is_skipped_and_all_busy_is_one_line_with_exit_6(tmp_path: Path) -> None:
    import msgpack  # type: ignore[import-untyped]  # noqa: PLC0415
    import zmq  # noqa: PLC0415

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    stop = threading.Event()
    busy = {"node1": True, "node2": False}
    routers: dict[str, zmq.Socket[bytes]] = {}
    ports: dict[str, int] = {}
    for n in busy:
        routers[n] = ctx.socket(zmq.ROUTER)
        routers[n].setsockopt(zmq.LINGER, 0)
        ports[n] = routers[n].bind_to_random_port("tcp://127.0.0.1")

    def fake_node(name: str) -> None:
        router = routers[name]
        while not stop.is_set():
            if router.poll(50):
                ident, frame = router.recv_multipart()
                rid = msgpack.unpackb(frame)["p"]["request_id"]
                if busy[name]:
                    err = f"{name} is busy: 32 requests of this client are pending; try again later"
                    res = {"code": 6, "reason": "busy", "details": []}
                    p = {"request_id": rid, "ok": False, "error": err, "result": res}
                else:
                    p = {"request_id": rid, "ok": True, "result": {"served_by": name}, "error": None}
                env = {"v": 1, "c": "c1", "s": name, "k": "api_reply", "i": 1, "p": p}
                router.send_multipart([ident, msgpack.packb(env)])

    threads = [threading.Thread(target=fake_node, args=(n,), daemon=True) for n in busy]
    for t in threads:
        t.start()
    nodes = {n: f"tcp://127.0.0.1:{port}" for n, port in ports.items()}
    cluster = ClusterConfig(root=tmp_path, cluster="c1", nodes=nodes, curve=False)
    client = ApiClient(cluster, name="busy-test", timeout=3, prefer="node1")
    try:
        # busy means "not run": even a write goes on to the next node
        assert client.call("set", {"sid": "proc:x", "options": {"state": "started"}}) == {
            "served_by": "node2"
        }
        busy["node2"] = True
        client.node = None
        with pytest.raises(ApiError) as ei:
            client.call("set", {"sid": "proc:x", "options": {"state": "started"}})
        assert ei.value.code == 6 and ei.value.reason == "busy"
        assert " is busy: " in ei.value.message and "\n" not in ei.value.message
    finally:
        client.close()
        stop.set()
        for t in threads:
            t.join(5)
        for r in routers.values():
            r.close()
        ctx.term()
