"""Outbox and the rate-limited log as units (the Outbox's wiring is in the transport tests)."""

from __future__ import annotations

from bus.codec import Envelope
from bus.messages import Ack, CommandResult, Heartbeat, Message, PeerUp
from bus.ratelog import RateLimitedLog
from bus.reliability import Outbox


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def env(body: Message, sender: str = "a") -> Envelope:
    return Envelope(1, "c", sender, body.KIND, 1, body)


def test_outbox_resends_until_acked() -> None:
    sent: list[tuple[str, Message]] = []
    clock = Clock()

    def send(node: str, msg: Message) -> bool:
        sent.append((node, msg))
        return True

    box = Outbox(send, retry_interval=1.0, clock=clock)
    r1, r2 = CommandResult("vm:1", "u1", 0), CommandResult("vm:2", "u2", 0)
    assert box.put("a", "u1", r1)
    box.put("b", "u2", r2)
    assert sent == [("a", r1), ("b", r2)]
    box.on_envelope(env(Heartbeat("a", 1, 1, 0.0)))  # not due yet
    assert len(sent) == 2
    clock.now = 1.0
    box.on_envelope(env(Heartbeat("a", 1, 2, 0.0)))
    assert sent[-1] == ("a", r1) and len(sent) == 3
    box.on_envelope(env(PeerUp("b", 5), sender="me"))  # peer up: at once, due or not
    assert sent[-1] == ("b", r2) and box.attempts("u2") == 2
    box.on_envelope(env(Ack("u1"), sender="b"))  # an ack from the wrong node is ignored
    assert box.pending() == {"u1": "a", "u2": "b"}
    box.on_envelope(env(Ack("u1"), sender="a"))
    assert box.pending() == {"u2": "b"}
    assert not box.ack("u1")
    assert box.resend("a") == 0


def test_outbox_is_bounded() -> None:
    box = Outbox(lambda n, m: True, capacity=2)
    for i in range(3):
        box.put("a", f"u{i}", Ack(f"u{i}"))
    assert list(box.pending()) == ["u1", "u2"]


def test_rate_limited_log_counts_suppressed_lines() -> None:
    clock = Clock()
    log = RateLimitedLog(interval=10.0, clock=clock)
    assert log.allow(("p", "r")) == 0
    assert log.allow(("p", "r")) is None
    assert log.allow(("p", "other")) == 0
    clock.now = 10.0
    assert log.allow(("p", "r")) == 1
    assert log.warning(("q", "r"), "bus: {} odd {{braces}}", "x") is True
    assert log.warning(("q", "r"), "bus: {}", "x") is False
