"""The envelope codec: one msgpack map per ZeroMQ frame, versioned and validated.

Wire layout of one envelope (see docs/PROTOCOL.md for the full contract)::

    {"v": 1, "c": cluster, "s": sender, "k": kind, "i": msg_id, "p": {payload}}

:meth:`Codec.decode` is the single gate for bytes coming off the network: it
returns a fully typed :class:`Envelope` or raises :class:`ProtocolError` whose
``reason`` is one of :class:`RejectReason`. It never raises anything else.

Decoding takes one of two paths (see also :mod:`bus.messages`):

* the fast path: msgspec decodes the envelope into a typed Struct, with the
  payload left as a zero-copy ``Raw`` slice, then decodes the payload
  straight into the message class of its kind. Every type is checked in C;
  Python only compares a few envelope values and walks free-form values.
  Any doubt at all (a decode error, a failed check) ends the fast path;
* the reference path (:meth:`Codec.decode_reference`): msgpack-python
  decodes the frame to plain objects, :meth:`Codec.validate` and
  :func:`bus.messages.from_payload` check them in the order of the reject
  table in docs/PROTOCOL.md and name the reason.

So a frame the fast path accepts is one the reference path accepts too (the
differential tests in tests/bus/test_bus_fuzz.py hold it to that), and a
frame it refuses costs one fast attempt more than before, then gets exactly
the reference verdict. Encoding is msgspec too (one call per frame), with a
fallback to msgpack-python for the rare values the two would encode
differently, so the bytes on the wire are the same as before.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NamedTuple, NoReturn

import msgpack  # type: ignore[import-untyped]
import msgspec

from bus.errors import ConfigError, ProtocolError
from bus.messages import FREE_FORM, WIRE_KINDS, Message, from_payload, plain_keyed, to_payload

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = frozenset({PROTOCOL_VERSION})
DEFAULT_MAX_FRAME_BYTES = 1 << 20
MAX_NAME_LEN = 64
MAX_MSG_ID = (1 << 64) - 1
_ENVELOPE_KEYS = frozenset({"v", "c", "s", "k", "i", "p"})


class RejectReason(StrEnum):
    """Why an inbound frame was dropped; each is a counter on the transport."""

    OVERSIZED = "oversized"
    MALFORMED = "malformed"
    BAD_ENVELOPE = "bad_envelope"
    BAD_VERSION = "bad_version"
    WRONG_CLUSTER = "wrong_cluster"
    UNKNOWN_KIND = "unknown_kind"
    LOCAL_KIND = "local_kind"
    BAD_PAYLOAD = "bad_payload"
    # Booked by the transport, not the codec:
    BAD_FRAMING = "bad_framing"
    SPOOFED_SENDER = "spoofed_sender"
    NOT_A_MEMBER = "not_a_member"
    REVOKED_KEY = "revoked_key"


class Envelope(NamedTuple):
    """A decoded, validated message plus its routing facts.

    ``origin`` is the ZeroMQ routing id the frame arrived on; it is not part
    of the wire format and only serves :meth:`bus.transport.Transport.reply`.
    ``user`` is not on the wire either: the owner of the CURVE key the
    frame's connection authenticated with (the ZAP User-Id, :mod:`bus.zap`),
    set by the transport on receipt; None for local events, without CURVE,
    and for envelopes not received from a connection.
    (A NamedTuple rather than a frozen dataclass: one is built per received
    frame, and this is several times cheaper to construct.)
    """

    version: int
    cluster: str
    sender: str
    kind: str
    msg_id: int
    body: Message
    origin: bytes = b""
    user: str | None = None


def _no_ext(code: int, data: Any) -> NoReturn:
    # Extension types are not part of the protocol; refusing them keeps
    # custom objects from ever being built out of network bytes.
    raise ValueError(f"msgpack ext type {code} not allowed")


def _valid_name(v: Any) -> bool:
    return type(v) is str and 0 < len(v) <= MAX_NAME_LEN


class _WireIn(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The envelope as the fast path decodes it; ``p`` stays undecoded until ``k`` is known."""

    v: int
    c: str
    s: str
    k: str
    i: int
    p: msgspec.Raw


class _WireOut(msgspec.Struct, gc=False):
    """The envelope as encoded: field order is the key order on the wire."""

    v: int
    c: str
    s: str
    k: str
    i: int
    p: Message


_decode_wire = msgspec.msgpack.Decoder(_WireIn, ext_hook=_no_ext).decode
_encode = msgspec.msgpack.Encoder().encode
_new_envelope = tuple.__new__

# Exact types whose msgspec encoding is byte for byte msgpack-python's (see
# _same_bytes); keys of maps are held to the scalar ones.
_SEND_SCALARS = frozenset({str, bytes, int, float, bool, type(None)})
_SEND_KEYS = frozenset({str, bytes, int})
_SEND_MAX_DEPTH = 32


def _same_bytes(value: Any, depth: int = 0) -> bool:
    """True if msgspec encodes ``value`` exactly as msgpack-python would.

    That holds for these exact builtin types. Anything else (subclasses,
    datetimes, sets, ext types, ...) goes through msgpack-python, which
    encodes or refuses it as it always did, so send() keeps its behaviour.
    """
    t = type(value)
    if t is dict:
        if depth >= _SEND_MAX_DEPTH:
            return False
        for k, v in value.items():
            if type(k) not in _SEND_KEYS or (type(v) not in _SEND_SCALARS and not _same_bytes(v, depth + 1)):
                return False
        return True
    if t is list or t is tuple:
        if depth >= _SEND_MAX_DEPTH:
            return False
        for v in value:  # noqa: SIM110 - an explicit loop is ~2x faster than all(genexpr) here
            if type(v) not in _SEND_SCALARS and not _same_bytes(v, depth + 1):
                return False
        return True
    return t in _SEND_SCALARS


class Codec:
    """Encode and decode envelopes for one cluster. Stateless, thread-safe."""

    def __init__(self, cluster: str, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if not _valid_name(cluster):
            raise ConfigError(f"cluster id must be a non-empty str of at most {MAX_NAME_LEN} chars")
        if max_frame_bytes < 64:
            raise ConfigError("max_frame_bytes must be at least 64")
        self.cluster = cluster
        self.max_frame_bytes = max_frame_bytes
        # Streaming decoder used by decode_stream(); msgpack enforces the cap
        # itself through max_buffer_size, so a hostile length prefix can never
        # make it allocate more than one frame's worth.
        self._stream_limit = max_frame_bytes

    def encode(self, sender: str, msg_id: int, msg: Message) -> bytes:
        """One frame for ``msg``; :class:`ProtocolError` (``oversized`` over the frame limit,
        ``bad_payload`` for a value msgpack cannot encode) instead of a frame no node would take.
        """
        frame: bytes | None = None
        # Typed fields hold what their annotation says (mypy --strict checks
        # the callers); free-form values are checked here.
        for name in FREE_FORM[type(msg)]:
            if not _same_bytes(getattr(msg, name)):
                break
        else:
            try:
                frame = _encode(_WireOut(PROTOCOL_VERSION, self.cluster, sender, msg.KIND, msg_id, msg))
            except Exception:  # e.g. a str subclass msgspec will not encode: msgpack-python decides
                frame = None
        if frame is None:
            try:
                frame = self.encode_reference(sender, msg_id, msg)
            except (TypeError, ValueError, OverflowError) as exc:
                # e.g. an int beyond 64 bits in a free-form value: one error type for callers
                # (a ProtocolError is an HaError) instead of whatever msgpack raises
                detail = f"{msg.KIND} cannot be encoded: {type(exc).__name__}: {str(exc)[:80]}"
                raise ProtocolError(RejectReason.BAD_PAYLOAD, detail) from exc
        if len(frame) > self.max_frame_bytes:
            # Refuse at the source: the receiver would drop it anyway and a
            # silent drop there is much harder to diagnose than an error here.
            raise ProtocolError(RejectReason.OVERSIZED, f"{msg.KIND} encodes to {len(frame)} bytes")
        return frame

    def encode_reference(self, sender: str, msg_id: int, msg: Message) -> bytes:
        """The envelope as msgpack-python packs it (the encoder before msgspec; no size check)."""
        frame: bytes = msgpack.packb(
            {
                "v": PROTOCOL_VERSION,
                "c": self.cluster,
                "s": sender,
                "k": msg.KIND,
                "i": msg_id,
                "p": to_payload(msg),
            },
        )
        return frame

    def decode(self, frame: bytes, origin: bytes = b"", user: str | None = None) -> Envelope:
        if len(frame) > self.max_frame_bytes:
            raise ProtocolError(RejectReason.OVERSIZED, f"{len(frame)} > {self.max_frame_bytes} bytes")
        try:
            w = _decode_wire(frame)
            wire = WIRE_KINDS.get(w.k)
            if (
                wire is not None
                and w.v in SUPPORTED_VERSIONS
                and w.c == self.cluster
                and 0 < len(w.s) <= MAX_NAME_LEN
                and w.i >= 0
            ):
                body = wire[0](w.p)
                for name in wire[1]:
                    if not plain_keyed(getattr(body, name)):
                        break
                else:
                    return _new_envelope(Envelope, (w.v, w.c, w.s, w.k, w.i, body, origin, user))
        except Exception:  # any doubt: the reference path decides, and names the reason
            pass
        return self.decode_reference(frame, origin, user)

    def decode_reference(self, frame: bytes, origin: bytes = b"", user: str | None = None) -> Envelope:
        """Decode with msgpack-python and the Python checks: slower, same verdict, exact reason."""
        if len(frame) > self.max_frame_bytes:
            raise ProtocolError(RejectReason.OVERSIZED, f"{len(frame)} > {self.max_frame_bytes} bytes")
        try:
            # unpackb derives max_str/bin/array/map_len from len(frame), so a
            # forged length header cannot trigger an allocation larger than the
            # (already bounded) frame; StackError covers nesting bombs. Its
            # defaults are what we need: raw=False (str must be UTF-8),
            # strict_map_key=True (map keys only str/bytes), use_list=True.
            obj = msgpack.unpackb(frame, ext_hook=_no_ext)
        except Exception as exc:  # any decoder failure is "malformed", by design
            raise ProtocolError(RejectReason.MALFORMED, f"{type(exc).__name__}: {str(exc)[:80]}") from None
        return self.validate(obj, origin, user)

    def decode_stream(self, chunks: list[bytes]) -> list[Envelope]:
        """Decode back-to-back envelopes (e.g. a capture file) with the same limits.

        Uses ``msgpack.Unpacker(max_buffer_size=...)`` so that no single
        object may exceed the frame limit even when lengths lie.
        """
        unpacker = msgpack.Unpacker(
            raw=False,
            strict_map_key=True,
            ext_hook=_no_ext,
            max_buffer_size=self._stream_limit,
        )
        out: list[Envelope] = []
        try:
            for chunk in chunks:
                unpacker.feed(chunk)
                out.extend(self.validate(obj) for obj in unpacker)
        except msgpack.BufferFull:
            raise ProtocolError(RejectReason.OVERSIZED, "stream object exceeds limit") from None
        except ProtocolError:
            raise
        except Exception as exc:
            raise ProtocolError(RejectReason.MALFORMED, f"{type(exc).__name__}") from None
        return out

    def validate(self, obj: Any, origin: bytes = b"", user: str | None = None) -> Envelope:
        """Check a decoded msgpack object and turn it into an :class:`Envelope`."""
        # Six entries and all six names present means exactly our keys.
        if type(obj) is not dict or len(obj) != len(_ENVELOPE_KEYS) or not _ENVELOPE_KEYS.issubset(obj):
            raise ProtocolError(RejectReason.BAD_ENVELOPE, "not a map with keys v,c,s,k,i,p")
        version, cluster, sender, kind, msg_id = obj["v"], obj["c"], obj["s"], obj["k"], obj["i"]
        if type(version) is not int:
            raise ProtocolError(RejectReason.BAD_ENVELOPE, "v is not an int")
        if version not in SUPPORTED_VERSIONS:
            raise ProtocolError(RejectReason.BAD_VERSION, f"version {version}")
        if cluster != self.cluster:
            raise ProtocolError(RejectReason.WRONG_CLUSTER, f"cluster {str(cluster)[:MAX_NAME_LEN]!r}")
        if (
            type(sender) is not str
            or type(kind) is not str
            or not 0 < len(sender) <= MAX_NAME_LEN
            or not 0 < len(kind) <= MAX_NAME_LEN
        ):
            raise ProtocolError(RejectReason.BAD_ENVELOPE, "sender/kind not a short non-empty str")
        if type(msg_id) is not int or not 0 <= msg_id <= MAX_MSG_ID:
            raise ProtocolError(RejectReason.BAD_ENVELOPE, "i is not a uint64")
        body = from_payload(kind, obj["p"], wire=True)  # unknown_kind / local_kind / bad_payload
        return Envelope(version, cluster, sender, kind, msg_id, body, origin, user)
