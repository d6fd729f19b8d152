"""Hostile input at a live endpoint: random, mutated and structured frames.

The oracle below re-states the acceptance rules of docs/PROTOCOL.md from
scratch (it does not call bus.codec). After the barrage, what the node
delivered upward must be exactly, and in order, what the oracle accepts;
every other frame must be booked under a rejected.* counter; and the node
must still answer a well-formed API request.
"""

from __future__ import annotations

import dataclasses
import random
import time
import typing
from collections.abc import Callable
from typing import Any

import msgpack  # type: ignore[import-untyped]
import zmq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bus.messages import MESSAGE_TYPES, ApiReply, ApiRequest
from bus.transport import TransportConfig
from tests.bus.conftest import Cluster, wait_until
from tests.bus.test_bus_codec import SAMPLES

MAX_FRAME = 4096
MEMBERS = ("a", "b")
FUZZ_BUDGET_S = 3.0


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
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    required = {
        n
        for n, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
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
FIELDS = {k: dataclasses.fields(cls) for k, cls in MESSAGE_TYPES.items()}  # type: ignore[arg-type]
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
                "p": {f.name: getattr(m, f.name) for f in dataclasses.fields(m)},
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
    deadline = time.monotonic() + FUZZ_BUDGET_S
    try:
        fuzzer = ctx.socket(zmq.DEALER)
        fuzzer.setsockopt(zmq.LINGER, 0)
        fuzzer.setsockopt(zmq.ROUTING_ID, b"b")
        fuzzer.setsockopt(zmq.SNDHWM, 0)
        fuzzer.connect(a.endpoint)

        # Generation only (no shrinking: a failure is judged after the run),
        # bounded by both an example count and a wall-clock budget.
        @settings(
            max_examples=1000,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(messages=barrage)
        def throw(messages: list[list[bytes]]) -> None:
            if time.monotonic() > deadline:
                return
            for parts in messages:
                if parts:
                    fuzzer.send_multipart(parts)
                    sent.append(parts)

        throw()
        sentinel = msgpack.packb({"v": 1, "c": "test", "s": "b", "k": "ack", "i": 0, "p": {"uid": "END"}})
        fuzzer.send(sentinel)
        sent.append([sentinel])
        wait_until(lambda: any(getattr(e.body, "uid", None) == "END" for e in got.items), timeout=20)

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
    assert len(sent) > 200, "fuzz run too short to mean anything"
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
    assert set(a.rejected()) >= {"malformed", "bad_envelope", "bad_payload", "oversized", "spoofed_sender"}
