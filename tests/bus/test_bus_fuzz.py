"""Hostile input at a live endpoint: random, mutated and structured frames.

The oracle below re-states the acceptance rules of docs/PROTOCOL.md from
scratch (it does not call bus.codec). The live run first sends one
hand-crafted frame per reject reason (each must be booked under exactly its
reason), then a random barrage. After it, what the node delivered upward
must be exactly, and in order, what the oracle accepts; every other frame
must be booked under a rejected.* counter; and the node must still answer a
well-formed API request.

The same frame makers also drive the codec alone, to hold its msgspec fast
path to the reference path (msgpack-python plus the Python checks): the fast
path may decline a frame, but never accept one the reference refuses, nor
build a different envelope; and the fast encoder writes the reference's bytes.
"""

from __future__ import annotations

import datetime
import enum
import random
import time
import typing
from collections.abc import Callable
from typing import Any

import msgpack  # type: ignore[import-untyped]
import msgspec
import pytest
import zmq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bus.codec import Codec, Envelope, RejectReason
from bus.errors import ProtocolError
from bus.messages import MESSAGE_TYPES, ApiReply, ApiRequest, Message
from bus.transport import TransportConfig
from tests.bus.conftest import Cluster, wait_until
from tests.bus.test_bus_codec import SAMPLES

MAX_FRAME = 4096
MEMBERS = ("a", "b")
# Random generation runs in batches of FUZZ_BATCH examples (at most
# FUZZ_BATCHES of them) and stops after FUZZ_BUDGET_S seconds, but only once
# at least MIN_FUZZ_FRAMES random frames went out: a loaded machine makes the
# run longer, never weaker. (Coverage of every reject reason does not depend
# on it: see HAND_CRAFTED.)
FUZZ_BUDGET_S = 3.0
MIN_FUZZ_FRAMES = 300
FUZZ_BATCH = 50
FUZZ_BATCHES = 20


# ---------------------------------------------------------------- the oracle


def _plain(v: Any, depth: int = 0) -> bool:
    if depth > 32:
        return False
    if v is None or type(v) in (str, int, float, bool, bytes):
        return True
    if type(v) is list:
        return all(_plain(x, depth + 1) for x in v)
    if type(v) is dict:
        return all(_plain(x, depth + 1) for x in v.values())
    return False


def _field_ok(tp: Any, v: Any) -> bool:
    if typing.get_origin(tp) in (typing.Union, __import__("types").UnionType):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return v is None or _field_ok(inner, v)
    if tp is float:
        return type(v) in (int, float)
    if tp in (str, int, bool):
        return type(v) is tp
    if typing.get_origin(tp) is dict:
        return type(v) is dict and all(type(k) is str for k in v) and _plain(v)
    if typing.get_origin(tp) is tuple:
        return type(v) is list and all(type(x) is str for x in v)
    return tp is Any and _plain(v)


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError("ext")


def oracle_accepts(parts: list[bytes], routing_id: bytes) -> bool:
    if len(parts) != 1 or len(parts[0]) > MAX_FRAME:
        return False
    try:
        env = msgpack.unpackb(parts[0], ext_hook=_no_ext, strict_map_key=True)
    except Exception:
        return False
    if type(env) is not dict or set(env) != {"v", "c", "s", "k", "i", "p"}:
        return False
    s, k, i, p = env["s"], env["k"], env["i"], env["p"]
    if type(env["v"]) is not int or env["v"] != 1 or env["c"] != "test":
        return False
    if not all(type(x) is str and 0 < len(x) <= 64 for x in (s, k)):
        return False
    if type(i) is not int or not 0 <= i < 2**64:
        return False
    cls = MESSAGE_TYPES.get(k)
    if cls is None or cls.LOCAL_ONLY or type(p) is not dict:
        return False
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in msgspec.structs.fields(cls)}
    required = {n for n, f in fields.items() if f.required}
    if not set(p) <= set(fields) or not required <= set(p):
        return False
    if not all(_field_ok(hints[n], v) for n, v in p.items()):
        return False
    if s in MEMBERS:  # members: routing id must match, never our own name
        if s.encode() != routing_id or s == "a":
            return False
        return not (k == "heartbeat" and p["node"] != s)
    return bool(k == "api_request")


# ------------------------------------------------------------ frame makers

plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=5,
)
HINTS = {k: typing.get_type_hints(cls) for k, cls in MESSAGE_TYPES.items()}
FIELDS = {k: msgspec.structs.fields(cls) for k, cls in MESSAGE_TYPES.items()}
# Big random frames from a seed: drawing kilobytes byte by byte is slow in hypothesis.
big_blobs = st.builds(
    lambda n, seed: random.Random(seed).randbytes(n),
    st.integers(MAX_FRAME - 8, MAX_FRAME + 1500),
    st.integers(0, 2**32),
)
names = st.sampled_from(["b", "b", "b", "a", "zz", "", "x" * 65]) | st.text(max_size=5)
kinds = st.sampled_from([*MESSAGE_TYPES, "nope"])


def valid_frames(sender: str) -> st.SearchStrategy[bytes]:
    return st.builds(
        lambda m, i: msgpack.packb(
            {
                "v": 1,
                "c": "test",
                "s": sender,
                "k": m.KIND,
                "i": i,
                "p": {f.name: getattr(m, f.name) for f in msgspec.structs.fields(m)},
            }
        ),
        st.sampled_from(SAMPLES),
        st.integers(0, 2**64 - 1),
    )


@st.composite
def structured(draw: st.DrawFn) -> bytes:
    env: dict[Any, Any] = {
        "v": draw(st.sampled_from([1, 1, 1, 2, 0, "1", None])),
        "c": draw(st.sampled_from(["test", "test", "other", 1])),
        "s": draw(names),
        "k": draw(kinds),
        "i": draw(st.integers(-5, 2**64 - 1) | st.sampled_from([True, 1.5, "1"])),
    }
    kind = env["k"]
    payload: dict[str, Any] = {}
    if kind in HINTS:
        hints = HINTS[kind]
        for f in FIELDS[kind]:
            if draw(st.integers(0, 9)) == 0:
                continue  # drop a field now and then
            good = {
                str: st.text(max_size=10),
                int: st.integers(0, 100),
                float: st.floats(0, 1),
                bool: st.booleans(),
            }.get(hints[f.name], plain_values)
            payload[f.name] = draw(good if draw(st.integers(0, 3)) else plain_values)
    if draw(st.integers(0, 9)) == 0:
        payload[draw(st.text(max_size=5))] = draw(plain_values)
    env["p"] = payload if draw(st.integers(0, 19)) else draw(plain_values)
    if draw(st.integers(0, 19)) == 0:
        env[draw(st.text(max_size=3))] = 1
    return msgpack.packb(env)  # type: ignore[no-any-return]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(valid_frames("b") | structured()))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 3))
        pos = draw(st.integers(0, max(0, len(frame) - 1)))
        if op == 0 and frame:
            frame[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == 1:
            del frame[pos:]
        elif op == 2:
            frame[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            frame[pos:pos] = frame[pos : pos + draw(st.integers(1, 16))]
    return bytes(frame)


single = (
    st.binary(max_size=64)
    | big_blobs
    | valid_frames("b")
    | valid_frames("a")
    | valid_frames("zz")
    | structured()
    | structured()
    | mutated()
    | mutated()
)
# One example = a handful of messages, mostly single-frame, some multi-frame.
message = (
    st.lists(single, min_size=1, max_size=1)
    | st.lists(single, min_size=1, max_size=1)
    | st.lists(single, min_size=1, max_size=1)
    | st.lists(single, min_size=0, max_size=3)
)
barrage = st.lists(message, min_size=1, max_size=8)


# ------------------------------------------- the codec's two paths agree

# Free-form values the fast path must not take at face value: timestamps and
# other ext types, non-str map keys, nesting around the depth limit.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
odd_scalars = st.builds(msgpack.Timestamp, st.integers(0, 2**32 - 1)) | st.builds(
    msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4)
)
odd_keys = st.text(max_size=4) | st.binary(max_size=4) | st.integers(-5, 5)


def _nest(depth: int, leaf: Any, as_map: bool) -> Any:
    for _ in range(depth):
        leaf = {"d": leaf} if as_map else [leaf]
    return leaf


hostile_values = st.recursive(
    scalars | odd_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_keys, inner, max_size=3),
    max_leaves=6,
) | st.builds(_nest, st.integers(28, 36), scalars, st.booleans())
FREE_FORM_KINDS = {"service_command": "params", "api_request": "args", "api_reply": "result"}


@st.composite
def free_form_frames(draw: st.DrawFn) -> bytes:
    """A valid frame of a kind with a free-form field, that field drawn from hostile_values."""
    sample = draw(st.sampled_from([m for m in SAMPLES if m.KIND in FREE_FORM_KINDS]))
    payload = {f.name: getattr(sample, f.name) for f in msgspec.structs.fields(sample)}
    value = draw(hostile_values)
    field = FREE_FORM_KINDS[sample.KIND]
    payload[field] = {draw(st.text(max_size=3)): value} if field != "result" else value
    env = {"v": 1, "c": "test", "s": "b", "k": sample.KIND, "i": 1, "p": payload}
    return msgpack.packb(env)  # type: ignore[no-any-return]


BAD_ENVELOPE_VALUES: dict[str, list[Any]] = {
    "v": [2, 0, -1, "1", True, 1.0, None],
    "c": ["other", "", b"test", 1, None],
    "s": ["", "x" * 65, b"b", 1, None, ["b"]],
    "k": ["nope", "", "peer_up", "peer_down", b"ack", 1, "x" * 65],
    "i": [-1, -(2**63), True, 1.5, "1", None, [1]],
    "p": [[], None, "x", 1, {}],
}
BAD_FIELD_VALUES: list[Any] = [None, True, 0, -1, 1.5, "x", b"x", [], ["x"], {}, {"k": 1}, {1: 2}]


def one_off_frames() -> list[bytes]:
    """Every valid sample frame with exactly one thing wrong, one way after another."""
    frames: list[bytes] = []
    for sample in SAMPLES:
        payload = {f.name: getattr(sample, f.name) for f in msgspec.structs.fields(sample)}
        env: dict[Any, Any] = {"v": 1, "c": "test", "s": "b", "k": sample.KIND, "i": 1, "p": payload}
        variants: list[dict[Any, Any]] = [env]
        variants += [{**env, key: bad} for key, bads in BAD_ENVELOPE_VALUES.items() for bad in bads]
        variants += [{k: v for k, v in env.items() if k != key} for key in env]
        variants += [{**env, extra: 1} for extra in ("x", "V", b"v", 1)]
        variants += [{**env, "p": {**payload, name: bad}} for name in payload for bad in BAD_FIELD_VALUES]
        variants += [{**env, "p": {k: v for k, v in payload.items() if k != name}} for name in payload]
        variants += [{**env, "p": {**payload, extra: 1}} for extra in ("extra", b"uid", 1)]
        frames += [msgpack.packb(v) for v in variants]
    return frames


class _Declined(Exception):
    pass


class FastOnly(Codec):
    """The codec with its reference path cut off: decode() returns what the fast path accepts."""

    def decode_reference(self, frame: bytes, origin: bytes = b"", user: str | None = None) -> Envelope:
        raise _Declined


def _verdict(decode: Callable[[bytes, bytes], Envelope], frame: bytes) -> str:
    """An envelope as its repr (which tells 2 from 2.0 and a list from a tuple), or the reason."""
    try:
        return "ok " + repr(decode(frame, b"b"))
    except ProtocolError as exc:
        return "rejected " + exc.reason


codec_frames = (
    st.binary(max_size=64)
    | valid_frames("b")
    | structured()
    | mutated()
    | free_form_frames()
    | st.builds(lambda f: f[: len(f) // 2], free_form_frames())
)


def _agree(frame: bytes) -> bool:
    """Check the fast path against the reference on ``frame``; True if it took the frame."""
    reference = _verdict(Codec("test", MAX_FRAME).decode_reference, frame)
    assert _verdict(Codec("test", MAX_FRAME).decode, frame) == reference
    try:
        fast = _verdict(FastOnly("test", MAX_FRAME).decode, frame)
    except _Declined:
        return False  # the reference decided, as checked above
    assert fast == reference  # accepted: the very envelope the reference builds
    return True


@settings(max_examples=600, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(frame=codec_frames)
def test_fast_path_never_accepts_what_the_reference_refuses(frame: bytes) -> None:
    _agree(frame)


def test_fast_path_on_every_one_off_frame() -> None:
    frames = one_off_frames()
    taken = sum(_agree(f) for f in frames)
    # The valid ones (and the harmless changes: a float field given an int,
    # an optional field left out) go the fast way; the rest are declined.
    assert len(SAMPLES) <= taken < len(frames) // 4


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_fast_path_takes_every_valid_sample(msg: Message) -> None:
    frame = Codec("test").encode("b", 7, msg)
    assert FastOnly("test").decode(frame).body == msg  # no _Declined: the fast path took it


class Level(enum.IntEnum):
    HIGH = 2


class Name(str):
    pass


# Values of every kind a caller might put in a free-form field: plain ones
# (msgspec writes them), and ones msgpack-python encodes its own way or
# refuses (the encoder hands those to it, so behaviour stays as it was).
send_values = st.recursive(
    scalars
    | odd_scalars
    | st.sampled_from([Level.HIGH, Name("n"), bytearray(b"ba"), {1, 2}, datetime.date(2024, 1, 1)]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(odd_keys, inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    sample=st.sampled_from(SAMPLES),
    value=send_values,
    sender=st.text(min_size=1, max_size=8),
    msg_id=st.integers(0, 2**64 - 1),
)
def test_fast_encoder_writes_the_reference_bytes(
    sample: Message, value: Any, sender: str, msg_id: int
) -> None:
    fields = {f.name: getattr(sample, f.name) for f in msgspec.structs.fields(sample)}
    if sample.KIND in FREE_FORM_KINDS:
        fields[FREE_FORM_KINDS[sample.KIND]] = value if sample.KIND == "api_reply" else {"k": value}
    msg = type(sample)(**fields)
    codec = Codec("test")
    try:
        expected = codec.encode_reference(sender, msg_id, msg)
    except Exception as exc:
        with pytest.raises(ProtocolError) as refused:  # the same refusal, as the bus's error type
            codec.encode(sender, msg_id, msg)
        assert type(refused.value.__cause__) is type(exc)
        return
    assert codec.encode(sender, msg_id, msg) == expected


def test_encoder_still_refuses_oversized() -> None:
    with pytest.raises(ProtocolError) as exc:
        Codec("test", MAX_FRAME).encode("b", 1, ApiReply("r", True, {"blob": "x" * MAX_FRAME}))
    assert exc.value.reason == RejectReason.OVERSIZED


# ------------------------------------------------------------ the live run


def envelope(**over: Any) -> bytes:
    """A frame from member "b" to a node of cluster "test", with fields replaced."""
    env: dict[str, Any] = {"v": 1, "c": "test", "s": "b", "k": "ack", "i": 1, "p": {"uid": "u"}}
    env.update(over)
    return msgpack.packb(env)  # type: ignore[no-any-return]


# One hand-crafted message (list of frames, sent from routing id "b") per
# reason a node books; together they make the counters' coverage exact and
# independent of what the random barrage happens to generate.
HAND_CRAFTED: dict[str, list[bytes]] = {
    RejectReason.OVERSIZED: [b"\x91" * (MAX_FRAME + 1)],
    RejectReason.MALFORMED: [b"\xc1"],
    RejectReason.BAD_ENVELOPE: [msgpack.packb([1, 2])],
    RejectReason.BAD_VERSION: [envelope(v=2)],
    RejectReason.WRONG_CLUSTER: [envelope(c="other")],
    RejectReason.UNKNOWN_KIND: [envelope(k="nope")],
    RejectReason.LOCAL_KIND: [envelope(k="peer_down", p={"node": "b"})],
    RejectReason.BAD_PAYLOAD: [envelope(p={"uid": 1})],
    RejectReason.BAD_FRAMING: [envelope(), envelope()],
    RejectReason.SPOOFED_SENDER: [envelope(s="a")],  # the receiving node's own name
    RejectReason.NOT_A_MEMBER: [envelope(s="zz")],  # a client may only send api_request
}


# Needs CURVE and a key revoked while connected: tests/bus/test_bus_security.py.
NOT_FUZZED = {RejectReason.REVOKED_KEY}


def test_hand_crafted_frames_cover_every_reason() -> None:
    assert set(HAND_CRAFTED) == set(RejectReason) - NOT_FUZZED
    for reason, parts in HAND_CRAFTED.items():
        assert not oracle_accepts(parts, b"b"), reason


def test_fuzzed_frames_never_reach_subscribers(make_cluster: Callable[..., Cluster]) -> None:
    cfg = TransportConfig(heartbeat_interval=0.05, peer_timeout=0.3, max_frame_bytes=MAX_FRAME)
    c = make_cluster(2, curve=False, config=cfg)
    c.start("a")  # "b" is a configured member that is not running: we play it
    a, got = c.nodes["a"], c.recorders["a"]
    a.subscribe(
        lambda env: a.reply(env, ApiReply(env.body.request_id, True, "pong")),  # type: ignore[attr-defined]
        [ApiRequest],
    )
    ctx = zmq.Context()
    sent: list[list[bytes]] = []

    def sentinel(uid: str) -> None:
        frame = msgpack.packb({"v": 1, "c": "test", "s": "b", "k": "ack", "i": 0, "p": {"uid": uid}})
        fuzzer.send(frame)
        sent.append([frame])
        wait_until(lambda: any(getattr(e.body, "uid", None) == uid for e in got.items), timeout=20)

    try:
        fuzzer = ctx.socket(zmq.DEALER)
        fuzzer.setsockopt(zmq.LINGER, 0)
        fuzzer.setsockopt(zmq.ROUTING_ID, b"b")
        fuzzer.setsockopt(zmq.SNDHWM, 0)
        fuzzer.connect(a.endpoint)

        # Every reason, deterministically, each booked under exactly its name.
        for parts in HAND_CRAFTED.values():
            fuzzer.send_multipart(parts)
            sent.append(parts)
        sentinel("HAND-CRAFTED")
        assert a.rejected() == dict.fromkeys(HAND_CRAFTED, 1)
        fuzzed = 0
        deadline = time.monotonic() + FUZZ_BUDGET_S

        # Generation only (no shrinking: a failure is judged after the run),
        # in short runs of FUZZ_BATCH examples until the wall-clock budget is
        # spent and MIN_FUZZ_FRAMES went out, or FUZZ_BATCHES runs are done.
        # (One long run would keep generating, unused, up to its example
        # count after the budget: seconds of nothing on a loaded machine.)
        @settings(
            max_examples=FUZZ_BATCH,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(messages=barrage)
        def throw(messages: list[list[bytes]]) -> None:
            nonlocal fuzzed
            for parts in messages:
                if parts:
                    fuzzer.send_multipart(parts)
                    sent.append(parts)
                    fuzzed += 1

        for _ in range(FUZZ_BATCHES):
            throw()
            if fuzzed >= MIN_FUZZ_FRAMES and time.monotonic() > deadline:
                break
        sentinel("END")

        # Still answering, correctly, to a polite client.
        client = ctx.socket(zmq.DEALER)
        client.setsockopt(zmq.LINGER, 0)
        client.connect(a.endpoint)
        client.send(a.codec.encode("cli", 1, ApiRequest("ping", "status")))
        assert client.poll(3000), "node stopped answering after the fuzz run"
        assert a.codec.decode(client.recv()).body == ApiReply("ping", True, "pong")
        fuzzer.close()
        client.close()
    finally:
        ctx.destroy(linger=0)

    accepted = [p[0] for p in sent if oracle_accepts(p, b"b")]
    delivered = [e for e in got.items if e.sender not in {"a", "cli"}]
    assert fuzzed >= MIN_FUZZ_FRAMES, "fuzz run too short to mean anything"
    assert 0 < len(accepted) < len(sent)
    # Exactly the frames the oracle accepts, in order, reached subscribers.
    assert [(e.sender, e.msg_id, e.kind) for e in delivered] == [
        (m["s"], m["i"], m["k"]) for m in (msgpack.unpackb(f) for f in accepted)
    ]
    for e in delivered:
        assert type(e.body) is MESSAGE_TYPES[e.kind]
    stats = a.stats()
    assert sum(a.rejected().values()) == len(sent) - len(accepted)
    assert stats.get("io_error", 0) == 0 and stats.get("handler_error", 0) == 0
    # Every reason was booked (the hand-crafted frames see to that), and no other.
    assert set(a.rejected()) == set(RejectReason) - NOT_FUZZED
