"""The API client's envelope on the wire (docs/API.md, docs/PROTOCOL.md), against a fake node.

The fake node is a plain ROUTER socket speaking msgpack by hand: what the
client sends must be exactly the documented ``api_request`` envelope, and it
must accept a hand-built ``api_reply`` (ignoring garbage and late replies).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
import zmq

from admin.cluster import ClusterConfig
from admin.errors import ExitCode
from admin.ports import free_port
from cli.api_client import ApiClient, ApiError

pytestmark = pytest.mark.timeout(30)


class FakeNode:
    """Answers each request: first garbage and a reply to another request, then the real reply."""

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.sock.bind(self.endpoint)
        self.seen: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.sock.poll(50):
                continue
            ident, frame = self.sock.recv_multipart()
            env = msgpack.unpackb(frame)
            self.seen.append(env)
            rid, cluster = env["p"]["request_id"], env["c"]

            def reply(p: dict[str, Any], cluster: str = cluster) -> bytes:
                e = {"v": 1, "c": cluster, "s": "node1", "k": "api_reply", "i": 7, "p": p}
                return bytes(msgpack.packb(e))

            self.sock.send_multipart([ident, b"\xc1 not msgpack"])
            self.sock.send_multipart([ident, reply({"request_id": "late", "ok": True, "result": "stale"})])
            self.sock.send_multipart(
                [ident, reply({"request_id": rid, "ok": True, "result": {"op": env["p"]["op"]}})]
            )

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()
        self.ctx.term()


@pytest.fixture
def node(tmp_path: Path) -> Any:
    n = FakeNode()
    cluster = ClusterConfig(root=tmp_path, cluster="c1", nodes={"node1": n.endpoint}, curve=False)
    client = ApiClient(cluster, name="wire-test", timeout=3)
    try:
        yield n, client
    finally:
        client.close()
        n.close()


def test_request_is_the_documented_envelope_and_the_reply_is_found(node: Any) -> None:
    fake, client = node
    assert client.call("info", {"x": [1, "a"]}) == {"op": "info"}
    (env,) = fake.seen
    assert list(env) == ["v", "c", "s", "k", "i", "p"]
    assert (env["v"], env["c"], env["s"], env["k"]) == (1, "c1", "wire-test", "api_request")
    assert isinstance(env["i"], int) and env["i"] >= 0
    assert list(env["p"]) == ["request_id", "op", "args"]
    assert env["p"]["op"] == "info" and env["p"]["args"] == {"x": [1, "a"]}


def test_arguments_the_wire_cannot_carry_are_bad_input_and_nothing_is_sent(node: Any) -> None:
    fake, client = node
    with pytest.raises(ApiError) as ei:
        client.call("status", {"when": object()})
    assert ei.value.code == ExitCode.USAGE
    assert fake.seen == []
