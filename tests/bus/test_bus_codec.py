"""Envelope codec and message registry: round trips and every reject reason."""

from __future__ import annotations

from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from bus.codec import PROTOCOL_VERSION, Codec, RejectReason
from bus.errors import BusError, ConfigError, KeyFileError, ProtocolError, UnknownPeerError
from bus.messages import (
    MESSAGE_TYPES,
    Ack,
    ApiReply,
    ApiRequest,
    CommandResult,
    Heartbeat,
    Message,
    PeerDown,
    PeerUp,
    QuorumLost,
    QuorumRegained,
    ServiceCommand,
    from_payload,
    schema_of,
    to_payload,
)
from ha import errors as ha_errors
from ha.errors import HaError

SAMPLES: list[Message] = [
    ServiceCommand("vm:100", "u1", "migrate", "a", "b", {"timeout": 30}),
    ServiceCommand("ct:101", "u2", "started", "a"),
    CommandResult("vm:100", "u1", 0, "ok"),
    Ack("u1"),
    Heartbeat("a", 123, 7, 1700000000.5),
    QuorumLost("a", ("a",)),
    QuorumRegained("a", ("a", "b")),
    ApiRequest("r1", "status"),
    ApiRequest("r2", "migrate", {"sid": "vm:100", "target": "b"}),
    ApiReply("r1", True, [1, "two", {"three": 3.0}]),
    ApiReply("r2", False, None, "no such service"),
]


DEEP: dict[str, Any] = {"deep": 1}
for _ in range(40):
    DEEP = {"deep": [DEEP]}


@pytest.fixture
def codec() -> Codec:
    return Codec("c1", max_frame_bytes=4096)


def raw(**over: Any) -> bytes:
    env: dict[str, Any] = {"v": PROTOCOL_VERSION, "c": "c1", "s": "a", "k": "ack", "i": 1, "p": {"uid": "u"}}
    env.update(over)
    return msgpack.packb({k: v for k, v in env.items() if v is not ...})  # type: ignore[no-any-return]


def reason(codec: Codec, frame: bytes) -> str:
    with pytest.raises(ProtocolError) as exc:
        codec.decode(frame)
    return exc.value.reason


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(codec: Codec, msg: Message) -> None:
    env = codec.decode(codec.encode("a", 42, msg))
    assert (env.version, env.cluster, env.sender, env.kind, env.msg_id) == (1, "c1", "a", msg.KIND, 42)
    assert env.body == msg and type(env.body) is type(msg)


def test_every_wire_kind_has_a_sample() -> None:
    wire = {k for k, cls in MESSAGE_TYPES.items() if not cls.LOCAL_ONLY}
    assert wire == {m.KIND for m in SAMPLES}


def test_ints_are_accepted_for_floats(codec: Codec) -> None:
    env = codec.decode(raw(k="heartbeat", p={"node": "a", "incarnation": 1, "seq": 2, "sent_at": 3}))
    assert env.body == Heartbeat("a", 1, 2, 3.0)
    assert isinstance(env.body, Heartbeat) and type(env.body.sent_at) is float


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (b"", RejectReason.MALFORMED),
        (b"\xc1", RejectReason.MALFORMED),
        (raw()[:-1], RejectReason.MALFORMED),
        (raw() + b"\x00", RejectReason.MALFORMED),
        (msgpack.packb(msgpack.ExtType(5, b"x")), RejectReason.MALFORMED),
        (b"\x91" * 5000, RejectReason.OVERSIZED),
        (msgpack.packb([1, 2]), RejectReason.BAD_ENVELOPE),
        (raw(x=1), RejectReason.BAD_ENVELOPE),
        (raw(p=...), RejectReason.BAD_ENVELOPE),
        (raw(v="1"), RejectReason.BAD_ENVELOPE),
        (raw(v=2), RejectReason.BAD_VERSION),
        (raw(c="other"), RejectReason.WRONG_CLUSTER),
        (raw(s=""), RejectReason.BAD_ENVELOPE),
        (raw(s="x" * 65), RejectReason.BAD_ENVELOPE),
        (raw(s=b"a"), RejectReason.BAD_ENVELOPE),
        (raw(i=-1), RejectReason.BAD_ENVELOPE),
        (raw(i=True), RejectReason.BAD_ENVELOPE),
        (raw(k="launch_missiles"), RejectReason.UNKNOWN_KIND),
        (raw(k="peer_up", p={"node": "b", "incarnation": 1}), RejectReason.LOCAL_KIND),
        (raw(k="peer_down", p={"node": "b"}), RejectReason.LOCAL_KIND),
        (raw(p=[]), RejectReason.BAD_PAYLOAD),
        (raw(p={}), RejectReason.BAD_PAYLOAD),
        (raw(p={"uid": 1}), RejectReason.BAD_PAYLOAD),
        (raw(p={"uid": "u", "extra": 1}), RejectReason.BAD_PAYLOAD),
        (raw(k="command_result", p={"sid": "s", "uid": "u", "exit_code": True}), RejectReason.BAD_PAYLOAD),
        (raw(k="command_result", p={"sid": "s", "uid": "u", "exit_code": 1.0}), RejectReason.BAD_PAYLOAD),
        (raw(k="quorum_lost", p={"node": "a", "members": ["a", 1]}), RejectReason.BAD_PAYLOAD),
        (raw(k="quorum_lost", p={"node": "a", "members": "ab"}), RejectReason.BAD_PAYLOAD),
        (raw(k="api_request", p={"request_id": "r", "op": "o", "args": {1: 2}}), RejectReason.MALFORMED),
        (raw(k="api_request", p={"request_id": "r", "op": "o", "args": {b"k": 2}}), RejectReason.BAD_PAYLOAD),
        (raw(k="api_request", p={"request_id": "r", "op": "o", "args": []}), RejectReason.BAD_PAYLOAD),
        (raw(k="lrm_status", p={"node": "a", "lrm_status": {}}), RejectReason.UNKNOWN_KIND),
        (raw(k="api_reply", p={"request_id": "r", "ok": 1}), RejectReason.BAD_PAYLOAD),
        (raw(k="api_reply", p={"request_id": "r", "ok": True, "error": 5}), RejectReason.BAD_PAYLOAD),
        (
            raw(k="api_reply", p={"request_id": "r", "ok": True, "result": msgpack.Timestamp(1)}),
            RejectReason.BAD_PAYLOAD,
        ),
        (
            raw(k="service_command", p={"sid": "s", "uid": "u", "state": "x", "node": "a", "params": DEEP}),
            RejectReason.BAD_PAYLOAD,
        ),
    ],
)
def test_rejects(codec: Codec, frame: bytes, expected: RejectReason) -> None:
    assert reason(codec, frame) == expected


def test_nesting_bomb_is_malformed(codec: Codec) -> None:
    assert reason(codec, b"\x91" * 3000 + b"\xc0") == RejectReason.MALFORMED


def test_forged_lengths_cannot_allocate(codec: Codec) -> None:
    # A str32 header claiming 4 GiB, followed by almost nothing.
    assert reason(codec, b"\x81\xa1v\xdb\xff\xff\xff\xff" + b"x" * 10) == RejectReason.MALFORMED
    assert reason(codec, b"\xdd\xff\xff\xff\xff") == RejectReason.MALFORMED  # array32 of 4G items


def test_encode_refuses_oversized(codec: Codec) -> None:
    with pytest.raises(ProtocolError) as exc:
        codec.encode("a", 1, ApiReply("r1", True, {"blob": "x" * 5000}))
    assert exc.value.reason == RejectReason.OVERSIZED


def test_an_unencodable_reply_is_an_ha_error(codec: Codec) -> None:
    """An API reply holding an int msgpack cannot encode: the caller's ``except HaError`` sees it."""
    for bad in (2**64, -(2**63) - 1, object()):
        with pytest.raises(HaError) as exc:
            codec.encode("a", 1, ApiReply("r1", True, {"n": bad}))
        assert isinstance(exc.value, ProtocolError) and exc.value.reason == RejectReason.BAD_PAYLOAD


def test_every_bus_error_is_an_ha_error() -> None:
    assert issubclass(BusError, HaError)
    assert issubclass(ConfigError, ha_errors.ConfigError) and issubclass(KeyFileError, ConfigError)
    assert issubclass(ProtocolError, ha_errors.ProtocolError) and issubclass(UnknownPeerError, BusError)
    assert str(KeyFileError("no key")) == "no key" and str(ProtocolError("malformed", "x")) == "malformed: x"


def test_stream_decoding_uses_the_same_limit(codec: Codec) -> None:
    frames = [codec.encode("a", i, Ack(f"u{i}")) for i in range(3)]
    blob = b"".join(frames)
    envs = codec.decode_stream([blob[:7], blob[7:]])
    assert [e.body for e in envs] == [Ack("u0"), Ack("u1"), Ack("u2")]
    with pytest.raises(ProtocolError) as exc:
        codec.decode_stream([b"\xdb\x00\x01\x00\x00" + b"x" * 4090, b"x" * 4096])
    assert exc.value.reason == RejectReason.OVERSIZED
    with pytest.raises(ProtocolError) as exc:
        codec.decode_stream([raw(v=9)])
    assert exc.value.reason == RejectReason.BAD_VERSION


def test_schema_and_payload_helpers() -> None:
    assert schema_of("service_command") == {
        "sid": True,
        "uid": True,
        "state": True,
        "node": True,
        "target": False,
        "params": False,
    }
    assert to_payload(QuorumLost("a", ("a", "b"))) == {"node": "a", "members": ("a", "b")}
    assert from_payload("peer_down", {"node": "x"}) == PeerDown("x")
    assert PeerUp.LOCAL_ONLY and not Ack.LOCAL_ONLY


def test_bad_codec_configuration() -> None:
    with pytest.raises(ConfigError):
        Codec("")
    with pytest.raises(ConfigError):
        Codec("c", max_frame_bytes=10)


def test_transport_timing_rules() -> None:
    from bus.config import TransportConfig  # noqa: PLC0415

    assert TransportConfig().heartbeat_interval < TransportConfig().peer_timeout
    with pytest.raises(ConfigError, match="heartbeat_interval < peer_timeout"):
        TransportConfig(heartbeat_interval=2.0, peer_timeout=1.5)
    # ZMTP pings sparser than the peer timeout, never denser: they only close dead connections
    with pytest.raises(ConfigError, match="zmtp_ping_interval >= peer_timeout"):
        TransportConfig(zmtp_ping_interval=1.0, peer_timeout=1.5)
    assert TransportConfig(zmtp_ping_interval=1.5, peer_timeout=1.5).zmtp_ping_interval == 1.5
