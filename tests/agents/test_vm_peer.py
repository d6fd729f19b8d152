"""Live migration's way between nodes: the member-only ``vm_incoming`` operation and peer calls.

``actors/api.py`` serves operations between members (``actors/peer.py``
``MEMBER_OPS``) only to a member's key: any client key, admin or read-only,
is refused with code 7 (docs/API.md "Between members"). ``PeerCalls`` sends
a member an ``ApiRequest`` and waits for its ``ApiReply``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from actors.api import ApiActor, Request
from actors.peer import PeerCalls
from admin.cluster import ClusterConfig
from agents.vmqmp import PeerError
from bus.codec import Envelope
from bus.messages import ApiReply, ApiRequest, Message
from store.dirstore import DirStore


class Replies:
    def __init__(self) -> None:
        self.got: list[ApiReply] = []

    def __call__(self, env: Envelope, reply: Any) -> None:
        self.got.append(reply)

    def wait(self, n: int) -> list[ApiReply]:
        deadline = time.monotonic() + 10
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.got


def test_vm_incoming_is_for_members_only(tmp_path: Path) -> None:
    nodes = {"n1": "tcp://127.0.0.1:1", "n2": "tcp://127.0.0.1:2"}
    cluster = ClusterConfig(root=tmp_path, cluster="c", nodes=nodes, curve=True)
    calls: list[tuple[str, dict[str, Any]]] = []

    def vm_incoming(sender: str, args: Mapping[str, Any]) -> Any:
        calls.append((sender, dict(args)))
        return {"uri": "tcp:127.0.0.1:4444"}

    replies = Replies()
    ref = ApiActor.start(
        "n1",
        sorted(nodes),
        DirStore(tmp_path / "store"),
        lambda: True,
        replies,
        cluster=cluster,
        member_ops={"vm_incoming": vm_incoming},
    )
    args = {"sid": "vm:100", "action": "listen"}
    try:
        for i, (sender, user) in enumerate(
            [("alice", "admin/alice"), ("bob", "readonly/bob"), ("n2", None), ("n1", "n1"), ("n2", "n2")]
        ):
            req = ApiRequest(f"r{i}", "vm_incoming", args)
            ref.tell(Request(Envelope(1, "c", sender, "api_request", 1, req, b"", user)))
        got = replies.wait(5)
    finally:
        ref.stop()
    assert [r.ok for r in got] == [False, False, False, False, True], got
    for r in got[:4]:  # an admin client key too: only members' keys may call it
        assert r.result["code"] == 7 and "for cluster members only" in str(r.error), r
    assert got[4].result == {"uri": "tcp:127.0.0.1:4444"}
    assert calls == [("n2", args)]  # the handler ran once, for the member, and learned who asked


def test_peer_calls_wait_for_their_reply() -> None:
    sent: list[tuple[str, ApiRequest]] = []
    answer: dict[str, ApiReply | None] = {}
    peers: PeerCalls

    def send(node: str, msg: Message) -> bool:
        assert isinstance(msg, ApiRequest)
        sent.append((node, msg))
        reply = answer.get(msg.args["action"])
        if reply is not None:  # answered from another thread, as the bus does
            r = ApiReply(msg.request_id, reply.ok, reply.result, reply.error)
            threading.Timer(0.05, peers.deliver, (r,)).start()
        return bool(msg.args["action"] != "unsent")

    peers = PeerCalls("n1", send)
    answer["listen"] = ApiReply("", True, {"uri": "tcp:h:1"})
    answer["resume"] = ApiReply("", False, {"code": 4}, "'vm:1' is on node 'n1': not resuming it here")
    assert peers.call("n2", "vm_incoming", {"action": "listen"}, 5.0) == {"uri": "tcp:h:1"}
    with pytest.raises(PeerError, match="n2: 'vm:1' is on node 'n1': not resuming it here"):
        peers.call("n2", "vm_incoming", {"action": "resume"}, 5.0)
    with pytest.raises(PeerError, match=r"no answer from n2 to .vm_incoming. within 0\.2s"):
        peers.call("n2", "vm_incoming", {"action": "abort"}, 0.2)
    with pytest.raises(PeerError, match="not sent to n2"):
        peers.call("n2", "vm_incoming", {"action": "unsent"}, 1.0)
    assert [n for n, _ in sent] == ["n2"] * 4
    assert len({m.request_id for _, m in sent}) == 4  # each call its own id
    # a reply nobody waits for (late, or never asked) is dropped
    assert not peers.deliver(ApiReply(sent[2][1].request_id, True, {}))
