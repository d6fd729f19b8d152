"""Typed bus messages: frozen dataclasses and the ``kind -> class`` registry.

Each message class has a wire ``KIND`` (a short snake_case string) and plain
fields. The payload on the wire is a msgpack map ``{field name: value}``;
:func:`to_payload` and :func:`from_payload` are the only translation points,
and :func:`from_payload` checks every field's type, so nothing half-valid is
ever constructed from network input.

Supported field types (anything else is refused at registration time):
``str``, ``int``, ``float``, ``bool``, ``dict[str, Any]`` (a map with string
keys and plain msgpack values), ``tuple[str, ...]`` (an array of strings),
``Any`` (any plain msgpack value) and ``X | None`` of those.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, Union, cast

from bus.errors import ProtocolError

# Reasons booked by from_payload; the codec re-uses them as counter names.
BAD_PAYLOAD = "bad_payload"
UNKNOWN_KIND = "unknown_kind"
LOCAL_KIND = "local_kind"

# Deep values (inside dict/Any fields) nest at most this far. msgpack itself
# stops recursion bombs; this keeps our own validator walk bounded too.
MAX_DEPTH = 32


class Message:
    """Base of every bus message. Subclasses are frozen dataclasses."""

    __slots__ = ()
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
    # Fast path when every field is present: check, then store each value
    # straight into its slot (name, exact type or None, nullable, converter
    # or None, slot setter). See from_payload.
    plan: tuple[tuple[str, type | None, bool, Converter | None, Callable[[Any, Any], None]], ...]


_new = object.__new__

MESSAGE_TYPES: dict[str, type[Message]] = {}
_SCHEMAS: dict[str, _Schema] = {}
_NAMES_BY_CLASS: dict[type[Message], tuple[str, ...]] = {}


_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})


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
    if kind in MESSAGE_TYPES:
        raise TypeError(f"duplicate message kind {kind!r}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    required = frozenset(
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    names = tuple(f.name for f in fields)
    exact: list[tuple[str, type, bool]] = []
    converters: list[tuple[str, Converter]] = []
    plan: list[tuple[str, type | None, bool, Converter | None, Callable[[Any, Any], None]]] = []
    if "__slots__" not in cls.__dict__ or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: messages are slotted dataclasses without __post_init__")
    for f in fields:
        tp = hints[f.name]
        args = typing.get_args(tp)
        nullable = typing.get_origin(tp) in (Union, types.UnionType) and type(None) in args
        inner = next((a for a in args if a is not type(None)), tp) if nullable else tp
        setter = cls.__dict__[f.name].__set__  # the slot's member descriptor
        if inner in (str, int, bool):
            exact.append((f.name, inner, nullable))
            plan.append((f.name, inner, nullable, None, setter))
        else:
            conv = _converter(f.name, tp)
            converters.append((f.name, conv))
            plan.append((f.name, None, False, conv, setter))
    MESSAGE_TYPES[kind] = cls
    _NAMES_BY_CLASS[cls] = names
    _SCHEMAS[kind] = _Schema(
        kind,
        cls,
        names,
        frozenset(names),
        required,
        tuple(exact),
        tuple(converters),
        cls.LOCAL_ONLY,
        tuple(plan),
    )
    return cls


def to_payload(msg: Message) -> dict[str, Any]:
    """The wire payload map of ``msg`` (tuples become msgpack arrays)."""
    return {name: getattr(msg, name) for name in _NAMES_BY_CLASS[type(msg)]}


def from_payload(kind: str, payload: Any, *, wire: bool = False) -> Message:
    """Validate ``payload`` against ``kind``'s schema and build the message.

    Raises :class:`ProtocolError` (reason ``unknown_kind``, ``local_kind``
    when ``wire`` is set and the kind is local-only, or ``bad_payload``).
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
    if keys == schema.all_names:
        # Every field present (what our own encoder always sends): validate
        # and fill the slots directly. The frozen dataclass __init__ does the
        # same stores through object.__setattr__, at several times the cost,
        # and one message is built per received frame. Safe because message
        # classes have no __post_init__ (checked in register()).
        obj: Message = _new(cast(type[Message], schema.ctor))
        for name, tp, nullable, conv, setter in schema.plan:
            v = payload[name]
            if conv is not None:
                v = conv(v)
            elif type(v) is not tp and not (nullable and v is None):
                raise _bad(name, tp.__name__ if tp is not None else "?", v)
            setter(obj, v)
        return obj
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
@dataclass(frozen=True, slots=True)
class ServiceCommand(Message):
    """CRM master -> LRM: bring ``sid`` to ``state`` (once per ``uid``)."""

    KIND: ClassVar[str] = "service_command"
    sid: str
    uid: str
    state: str
    node: str
    target: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@register
@dataclass(frozen=True, slots=True)
class CommandResult(Message):
    """LRM -> CRM master: the outcome of the command tagged ``uid``."""

    KIND: ClassVar[str] = "command_result"
    sid: str
    uid: str
    exit_code: int
    message: str = ""


@register
@dataclass(frozen=True, slots=True)
class Ack(Message):
    """Receipt of the command or result tagged ``uid``; stops re-sending."""

    KIND: ClassVar[str] = "ack"
    uid: str


@register
@dataclass(frozen=True, slots=True)
class LrmStatusPush(Message):
    """A node's LRM publishes its current lrm_status record."""

    KIND: ClassVar[str] = "lrm_status"
    node: str
    lrm_status: dict[str, Any]


@register
@dataclass(frozen=True, slots=True)
class ManagerStatusPush(Message):
    """The master publishes its current manager_status record."""

    KIND: ClassVar[str] = "manager_status"
    manager_status: dict[str, Any]


@register
@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """Liveness beacon; ``incarnation`` changes when the sender restarts."""

    KIND: ClassVar[str] = "heartbeat"
    node: str
    incarnation: int
    seq: int
    sent_at: float


@register
@dataclass(frozen=True, slots=True)
class QuorumLost(Message):
    """``node`` no longer sees a majority; ``members`` are the nodes it sees."""

    KIND: ClassVar[str] = "quorum_lost"
    node: str
    members: tuple[str, ...]


@register
@dataclass(frozen=True, slots=True)
class QuorumRegained(Message):
    """``node`` sees a majority again (also sent the first time it gets one)."""

    KIND: ClassVar[str] = "quorum_regained"
    node: str
    members: tuple[str, ...]


@register
@dataclass(frozen=True, slots=True)
class PeerUp(Message):
    """Local event: traffic from ``node`` resumed (or it restarted)."""

    KIND: ClassVar[str] = "peer_up"
    LOCAL_ONLY: ClassVar[bool] = True
    node: str
    incarnation: int


@register
@dataclass(frozen=True, slots=True)
class PeerDown(Message):
    """Local event: nothing heard from ``node`` within the peer timeout."""

    KIND: ClassVar[str] = "peer_down"
    LOCAL_ONLY: ClassVar[bool] = True
    node: str


@register
@dataclass(frozen=True, slots=True)
class ApiRequest(Message):
    """Client (CLI, tools) -> node: run API operation ``op``."""

    KIND: ClassVar[str] = "api_request"
    request_id: str
    op: str
    args: dict[str, Any] = field(default_factory=dict)


@register
@dataclass(frozen=True, slots=True)
class ApiReply(Message):
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
