"""The API actor keeps serving whatever a handler raises (issue #10: actors never die silently)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from actors.api import ApiActor, Request, StatusWritten
from admin.cluster import ClusterConfig
from bus.codec import Envelope
from bus.messages import ApiReply, ApiRequest
from ha.records import ManagerStatus
from store.dirstore import DirStore


class Replies:
    def __init__(self) -> None:
        self.got: list[ApiReply] = []
        self.event = threading.Event()

    def __call__(self, env: Envelope, reply: Any) -> None:
        self.got.append(reply)
        self.event.set()

    def wait(self, n: int) -> list[ApiReply]:
        deadline = time.monotonic() + 10
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.got


def request(rid: str, op: str = "info") -> Request:
    return Request(Envelope(1, "c", "client", "api_request", 1, ApiRequest(rid, op, {})))


BROKEN: set[str] = set()  # which handler steps the test breaks


class BreakableApiActor(ApiActor):
    def user_of(self, env: Envelope) -> str | None:
        if "user_of" in BROKEN:
            raise RuntimeError("boom in user_of")
        return super().user_of(env)

    def on_start(self) -> None:
        super().on_start()
        if self.publisher is not None and "feed" in BROKEN:

            def broken_feed(ms: ManagerStatus) -> None:
                raise KeyError("bad status")

            self.publisher.feed = broken_feed  # type: ignore[method-assign]


def actor(tmp_path: Path, replies: Replies) -> Any:
    cluster = ClusterConfig(root=tmp_path, cluster="c", nodes={"n1": "tcp://127.0.0.1:1"}, curve=False)
    store = DirStore(tmp_path / "store")
    return BreakableApiActor.start("n1", ["n1"], store, lambda: True, replies, cluster=cluster)


def test_an_exception_outside_the_operation_is_answered_and_the_actor_keeps_serving(tmp_path: Path) -> None:
    replies = Replies()
    BROKEN.clear()
    BROKEN.add("user_of")
    ref = actor(tmp_path, replies)
    try:
        ref.tell(request("r1"))
        got = replies.wait(1)
        assert len(got) == 1 and not got[0].ok and "internal error: boom in user_of" in str(got[0].error)
        assert ref.is_alive(), "the actor must survive its handler's exception"
        BROKEN.clear()  # healed: the next request is served normally
        ref.tell(request("r2"))
        got = replies.wait(2)
        assert len(got) == 2 and got[1].ok and got[1].request_id == "r2"
    finally:
        BROKEN.clear()
        ref.stop()


def test_a_failing_event_feed_does_not_stop_the_actor(tmp_path: Path) -> None:
    replies = Replies()
    BROKEN.clear()
    BROKEN.add("feed")
    ref = actor(tmp_path, replies)
    try:
        ref.tell(StatusWritten(ManagerStatus()))
        ref.tell(request("r3"))
        got = replies.wait(1)
        assert len(got) == 1 and got[0].ok and ref.is_alive()
    finally:
        BROKEN.clear()
        ref.stop()
