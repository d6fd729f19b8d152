"""Typed bus messages: frozen msgspec Structs and the ``kind -> class`` registry.

Each message class has a wire ``KIND`` (a short snake_case string) and plain
fields. The payload on the wire is a msgpack map ``{field name: value}``.

There are two ways from wire to message, and they must agree:

* the *fast path* (:data:`WIRE_KINDS` + :func:`plain_keyed`, used by
  :meth:`bus.codec.Codec.decode`): msgspec decodes the payload straight into
  the typed Struct, checking every field's type in C, and only the free-form
  values (``dict``/``Any`` fields) are walked here afterwards;
* the *reference path* (:func:`from_payload`): checks a plain decoded map
  field by field in Python. It is the readable statement of the rules, it
  decides the reject reason of every frame the fast path refuses, and
  tests/bus/test_bus_fuzz.py checks that the fast path never accepts
  anything it refuses (nor builds a different message).

Either way nothing half-valid is ever constructed from network input.

Supported field types (anything else is refused at registration time):
``str``, ``int``, ``float``, ``bool``, ``dict[str, Any]`` (a map with string
keys and plain msgpack values), ``tuple[str, ...]`` (an array of strings),
``Any`` (any plain msgpack value) and ``X | None`` of those.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn, TypeVar, Union

import msgspec

from bus.errors import ProtocolError

# Reasons booked by from_payload; the codec re-uses them as counter names.
BAD_PAYLOAD = "bad_payload"
UNKNOWN_KIND = "unknown_kind"
LOCAL_KIND = "local_kind"

# Deep values (inside dict/Any fields) nest at most this far. msgpack itself
# stops recursion bombs; this keeps our own validator walk bounded too.
MAX_DEPTH = 32
# Kinds are envelope names (docs/PROTOCOL.md: 1-64 chars); the codec's fast
# path takes that for granted for every registered kind.
MAX_KIND_LEN = 64


class Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of every bus message. Subclasses are frozen msgspec Structs.

    They behave like frozen dataclasses (positional or keyword construction,
    defaults, ``==``, ``repr``, attribute access, pattern matching); use
    :func:`msgspec.structs.fields` instead of :func:`dataclasses.fields`.
    """

    KIND: ClassVar[str]
    # Local-only kinds are produced by the transport itself (peer/quorum
    # events); a frame claiming one of them from the network is refused.
    LOCAL_ONLY: ClassVar[bool] = False


M = TypeVar("M", bound=type[Message])

Converter = Callable[[Any], Any]


@dataclass(frozen=True)
class _Schema:
    kind: str
    ctor: Callable[..., Message]
    names: tuple[str, ...]
    all_names: frozenset[str]
    required: frozenset[str]
    # Split for speed: plain `type(v) is T` checks inline, the rest through
    # converters that may also normalise (int -> float, list -> tuple).
    exact: tuple[tuple[str, type, bool], ...]
    converters: tuple[tuple[str, Converter], ...]
    local_only: bool


MESSAGE_TYPES: dict[str, type[Message]] = {}
_SCHEMAS: dict[str, _Schema] = {}
_NAMES_BY_CLASS: dict[type[Message], tuple[str, ...]] = {}
# The fast path's table, wire kinds only: kind -> (msgspec's decode function
# for its payload, its free-form field names). Read by bus.codec.
WIRE_KINDS: dict[str, tuple[Callable[[Any], Message], tuple[str, ...]]] = {}
# class -> its free-form field names (what the encoder checks at run time).
FREE_FORM: dict[type[Message], tuple[str, ...]] = {}


_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})
_KEYS = frozenset({str, bytes})


def _plain(value: Any, depth: int = 0) -> bool:
    """True if ``value`` is made only of plain msgpack types (no ext/timestamps).

    Map keys are not checked here: the decoder runs with strict_map_key, so
    they can only be str or bytes.
    """
    t = type(value)
    if t in _SCALARS:
        return True
    if depth >= MAX_DEPTH:
        return False
    if t is list:
        items = value
    elif t is dict:
        items = value.values()
    else:
        return False
    for v in items:  # noqa: SIM110 - an explicit loop is ~2x faster than all(genexpr) here
        if type(v) not in _SCALARS and not _plain(v, depth + 1):
            return False
    return True


def plain_keyed(value: Any, depth: int = 0) -> bool:
    """:func:`_plain`, and every map key a str or bytes (for msgspec's output).

    msgspec decodes free-form values like msgpack does, except that it also
    lets through map keys of other types (strict_map_key refuses them), and
    decodes the timestamp extension to a datetime (refused here as not plain).
    Same depth rule as :func:`_plain`.
    """
    t = type(value)
    if t is dict:
        if depth >= MAX_DEPTH:
            return False
        for k, v in value.items():
            if type(k) not in _KEYS or (type(v) not in _SCALARS and not plain_keyed(v, depth + 1)):
                return False
        return True
    if t is list:
        if depth >= MAX_DEPTH:
            return False
        for v in value:  # noqa: SIM110 - an explicit loop is ~2x faster than all(genexpr) here
            if type(v) not in _SCALARS and not plain_keyed(v, depth + 1):
                return False
        return True
    return t in _SCALARS


def _no_ext(code: int, data: memoryview) -> NoReturn:
    # Extension types are not part of the protocol: fail the fast path, and
    # the reference path books the frame as malformed.
    raise ValueError(f"msgpack ext type {code} not allowed")


def _bad(name: str, expected: str, value: Any) -> ProtocolError:
    return ProtocolError(BAD_PAYLOAD, f"field {name!r}: expected {expected}, got {type(value).__name__}")


def _converter(name: str, tp: Any) -> Converter:
    """Build a checker/normaliser for one annotated field type."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"{name}: only 'X | None' unions are supported")
        inner = _converter(name, args[0])

        def optional(v: Any) -> Any:
            return None if v is None else inner(v)

        return optional
    if tp is str or tp is bool:

        def exact(v: Any) -> Any:
            # `type(...) is` on purpose: bool is an int subclass, and msgpack
            # never produces str subclasses, so anything else is hostile.
            if type(v) is not tp:
                raise _bad(name, tp.__name__, v)
            return v

        return exact
    if tp is int:

        def integer(v: Any) -> Any:
            if type(v) is not int:
                raise _bad(name, "int", v)
            return v

        return integer
    if tp is float:

        def real(v: Any) -> Any:
            # Other implementations may send 2 for 2.0; accept and normalise.
            if type(v) is float:
                return v
            if type(v) is int:
                return float(v)
            raise _bad(name, "float", v)

        return real
    if origin is dict:
        key_t, _ = typing.get_args(tp)
        if key_t is not str:
            raise TypeError(f"{name}: dict keys must be str")

        def mapping(v: Any) -> Any:
            if type(v) is not dict:
                raise _bad(name, "map with str keys and plain values", v)
            for k in v:
                if type(k) is not str:
                    raise _bad(name, "map with str keys", k)
            if not _plain(v):
                raise _bad(name, "map with plain values", v)
            return v

        return mapping
    if origin is tuple:
        item_types = typing.get_args(tp)
        if item_types != (str, Ellipsis):
            raise TypeError(f"{name}: only tuple[str, ...] is supported")

        def strings(v: Any) -> Any:
            if type(v) not in (list, tuple) or not all(type(x) is str for x in v):
                raise _bad(name, "array of str", v)
            return tuple(v)

        return strings
    if tp is Any:

        def anything(v: Any) -> Any:
            if not _plain(v):
                raise _bad(name, "plain msgpack value", v)
            return v

        return anything
    raise TypeError(f"{name}: unsupported field type {tp!r}")


def register(cls: M) -> M:
    """Class decorator: add a message class to the registry (kinds are unique)."""
    kind = cls.KIND
    if type(kind) is not str or not 0 < len(kind) <= MAX_KIND_LEN:
        raise TypeError(f"{cls.__name__}: KIND must be a 1-{MAX_KIND_LEN} char str")
    if kind in MESSAGE_TYPES:
        raise TypeError(f"duplicate message kind {kind!r}")
    config = cls.__struct_config__
    # The fast path relies on these: unknown payload keys refused, field
    # names on the wire as in Python, every field always encoded, a map (not
    # an array) on the wire, and nothing run on construction.
    if (
        not config.frozen
        or not config.forbid_unknown_fields
        or config.omit_defaults
        or config.array_like
        or config.tag is not None
        or hasattr(cls, "__post_init__")
    ):
        raise TypeError(f"{cls.__name__}: messages are plain frozen Structs deriving from Message")
    hints = typing.get_type_hints(cls)
    fields = msgspec.structs.fields(cls)
    if any(f.encode_name != f.name for f in fields):
        raise TypeError(f"{cls.__name__}: renamed fields are not supported")
    required = frozenset(
        f.name for f in fields if f.default is msgspec.NODEFAULT and f.default_factory is msgspec.NODEFAULT
    )
    names = tuple(f.name for f in fields)
    exact: list[tuple[str, type, bool]] = []
    converters: list[tuple[str, Converter]] = []
    free_form: list[str] = []
    for f in fields:
        tp = hints[f.name]
        args = typing.get_args(tp)
        nullable = typing.get_origin(tp) in (Union, types.UnionType) and type(None) in args
        inner = next((a for a in args if a is not type(None)), tp) if nullable else tp
        if inner in (str, int, bool):
            exact.append((f.name, inner, nullable))
        else:
            converters.append((f.name, _converter(f.name, tp)))
            if inner is Any or typing.get_origin(inner) is dict:
                free_form.append(f.name)
    MESSAGE_TYPES[kind] = cls
    _NAMES_BY_CLASS[cls] = names
    FREE_FORM[cls] = tuple(free_form)
    _SCHEMAS[kind] = _Schema(
        kind,
        cls,
        names,
        frozenset(names),
        required,
        tuple(exact),
        tuple(converters),
        cls.LOCAL_ONLY,
    )
    if not cls.LOCAL_ONLY:
        WIRE_KINDS[kind] = (msgspec.msgpack.Decoder(cls, ext_hook=_no_ext).decode, tuple(free_form))
    return cls


def to_payload(msg: Message) -> dict[str, Any]:
    """The wire payload map of ``msg`` (tuples become msgpack arrays)."""
    return {name: getattr(msg, name) for name in _NAMES_BY_CLASS[type(msg)]}


def from_payload(kind: str, payload: Any, *, wire: bool = False) -> Message:
    """Validate ``payload`` against ``kind``'s schema and build the message.

    This is the reference path (see the module doc). Raises
    :class:`ProtocolError` (reason ``unknown_kind``, ``local_kind`` when
    ``wire`` is set and the kind is local-only, or ``bad_payload``).
    Unknown keys are refused, not ignored: any schema change bumps the
    protocol version (see docs/PROTOCOL.md), so an extra key means a bug or
    an attacker, never a newer peer. ``payload`` may be normalised in place.
    """
    schema = _SCHEMAS.get(kind)
    if schema is None:
        raise ProtocolError(UNKNOWN_KIND, repr(kind)[:64])
    if wire and schema.local_only:
        raise ProtocolError(LOCAL_KIND, kind)
    if type(payload) is not dict:
        raise ProtocolError(BAD_PAYLOAD, "payload is not a map")
    keys = payload.keys()
    if keys != schema.all_names:
        if not keys <= schema.all_names:
            extra = [repr(k)[:32] for k in keys if k not in schema.all_names][:4]
            raise ProtocolError(BAD_PAYLOAD, f"unknown fields {extra}")
        if not schema.required <= keys:
            raise ProtocolError(BAD_PAYLOAD, f"missing fields {sorted(schema.required - keys)}")
    for name, tp, nullable in schema.exact:
        if name in payload:
            v = payload[name]
            # `type(...) is` on purpose: bool is an int subclass, and msgpack
            # never produces str subclasses, so anything else is hostile.
            if type(v) is not tp and not (nullable and v is None):
                raise _bad(name, tp.__name__, v)
    for name, conv in schema.converters:
        if name in payload:
            payload[name] = conv(payload[name])
    return schema.ctor(**payload)


def kind_of(cls: type[Message]) -> str:
    return cls.KIND


# ---------------------------------------------------------------------------
# The messages. Field order is documentation order in docs/PROTOCOL.md.


@register
class ServiceCommand(Message, frozen=True):
    """CRM master -> LRM: bring ``sid`` to ``state`` (once per ``uid``)."""

    KIND: ClassVar[str] = "service_command"
    sid: str
    uid: str
    state: str
    node: str
    target: str | None = None
    params: dict[str, Any] = msgspec.field(default_factory=dict)


@register
class CommandResult(Message, frozen=True):
    """LRM -> CRM master: the outcome of the command tagged ``uid``."""

    KIND: ClassVar[str] = "command_result"
    sid: str
    uid: str
    exit_code: int
    message: str = ""


@register
class Ack(Message, frozen=True):
    """Receipt of the command or result tagged ``uid``; stops re-sending."""

    KIND: ClassVar[str] = "ack"
    uid: str


@register
class Heartbeat(Message, frozen=True):
    """Liveness beacon; ``incarnation`` changes when the sender restarts."""

    KIND: ClassVar[str] = "heartbeat"
    node: str
    incarnation: int
    seq: int
    sent_at: float


@register
class QuorumLost(Message, frozen=True):
    """``node`` no longer sees a majority; ``members`` are the nodes it sees."""

    KIND: ClassVar[str] = "quorum_lost"
    node: str
    members: tuple[str, ...]


@register
class QuorumRegained(Message, frozen=True):
    """``node`` sees a majority again (also sent the first time it gets one)."""

    KIND: ClassVar[str] = "quorum_regained"
    node: str
    members: tuple[str, ...]


@register
class PeerUp(Message, frozen=True):
    """Local event: traffic from ``node`` resumed (or it restarted)."""

    KIND: ClassVar[str] = "peer_up"
    LOCAL_ONLY: ClassVar[bool] = True
    node: str
    incarnation: int


@register
class PeerDown(Message, frozen=True):
    """Local event: nothing heard from ``node`` within the peer timeout."""

    KIND: ClassVar[str] = "peer_down"
    LOCAL_ONLY: ClassVar[bool] = True
    node: str


@register
class ApiRequest(Message, frozen=True):
    """Client (CLI, tools) -> node: run API operation ``op``."""

    KIND: ClassVar[str] = "api_request"
    request_id: str
    op: str
    args: dict[str, Any] = msgspec.field(default_factory=dict)


@register
class ApiReply(Message, frozen=True):
    """Node -> client: the answer to ``request_id``."""

    KIND: ClassVar[str] = "api_reply"
    request_id: str
    ok: bool
    result: Any = None
    error: str | None = None


def schema_of(kind: str) -> Mapping[str, bool]:
    """``{field: required}`` for ``kind`` (used by docs/tests)."""
    schema = _SCHEMAS[kind]
    return {name: name in schema.required for name in schema.names}
