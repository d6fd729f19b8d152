"""A client of the node API (docs/API.md): requests with failover, client keys, events.

``ApiClient(cluster).call(op, args)`` sends one ``api_request`` envelope to
a node of the cluster and returns the ``result`` of its ``api_reply``, or
raises :class:`ApiError` with the API's message, exit code and details.

Failover. Nodes are tried in order (the preferred one first). A node that
does not complete the connection handshake within ``connect_timeout`` is
skipped; a read that gets no reply within ``timeout`` is retried on the next
node. A write is only retried elsewhere when it certainly did not run: the
node was not connected, or it answered "no quorum". A write whose node went
silent after receiving it fails with exit 6 ("may or may not have been
applied") instead of running twice.

Client keys (CURVE). ``keys/clients/admin/<name>.key_secret`` and
``keys/clients/readonly/<name>.key_secret`` in the cluster dir; the nodes
authorise the matching ``.key`` files, re-read when they change (a new key
works at once, a revoked one is refused at once). :func:`generate_client_key`
creates a pair, :func:`revoke_client_key` removes one.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import zmq

from admin.cluster import ClusterConfig
from admin.errors import REASONS, ExitCode
from bus.codec import Codec
from bus.errors import ConfigError, ProtocolError
from bus.messages import ApiReply, ApiRequest

# Kept light on purpose (no admin.ops import: every CLI call pays the import time);
# tests/cli check these equal the server's constants.
ROLE_ADMIN = "admin"
ROLES = ("admin", "readonly")
ENV_KEY = "PYHA_KEY"
ENV_NODE = "PYHA_NODE"
# what a node may send us in one message (the codec's 1 MiB frame limit, plus headroom)
MAX_IN_BYTES = 4 * (1 << 20) + 1024
READ_OPS = frozenset({"info", "status", "config", "groups", "rules", "datacenter"})
_HANDSHAKE_FAIL = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


class ApiError(Exception):
    """A refused or failed call: one-line message, exit code, API reason, detail lines."""

    def __init__(
        self, message: str, code: int, reason: str | None = None, details: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason or REASONS.get(code, "failed")
        self.details = details or []


@dataclass(frozen=True)
class ClientKey:
    name: str
    role: str
    public: bytes
    secret: bytes
    path: Path


def client_keys_dir(cluster: ClusterConfig, role: str) -> Path:
    return cluster.keys_dir / "clients" / role


def generate_client_key(cluster: ClusterConfig, name: str, role: str, *, force: bool = False) -> Path:
    """Create ``keys/clients/<role>/<name>.key[_secret]``; running nodes accept it within a second."""
    from bus.errors import KeyFileError  # noqa: PLC0415 - rare path, keep CLI start-up light
    from bus.keys import generate  # noqa: PLC0415

    if role not in ROLES:
        raise ApiError(f"role must be one of {', '.join(ROLES)}", ExitCode.USAGE)
    try:
        pub, sec = generate(client_keys_dir(cluster, role), name, force=force)
    except (KeyFileError, ValueError) as e:
        raise ApiError(str(e), ExitCode.USAGE) from None
    del pub
    return sec


def revoke_client_key(cluster: ClusterConfig, name: str, role: str | None = None) -> list[Path]:
    """Remove client key ``name`` (of ``role``, else of any role); returns the files removed.

    Every node re-reads the key directory within a second (bus.keys.KeyRing):
    from then on the key's handshakes are refused and whatever its open
    connections send is dropped (docs/SECURITY.md).
    """
    from bus.keys import LEGACY_CLIENT_PREFIX  # noqa: PLC0415 - rare path, keep CLI start-up light

    if "/" in name or name.startswith(".") or not name:
        raise ApiError(f"invalid key name {name!r}", ExitCode.USAGE)
    removed: list[Path] = []
    for r in (role,) if role else ROLES:
        d = client_keys_dir(cluster, r)
        # the public key first: from that moment on the nodes refuse it
        for p in (
            d / f"{name}.key",
            d / f"{name}.key_secret",
            cluster.keys_dir / f"{LEGACY_CLIENT_PREFIX}{r}.{name}.key",
        ):
            try:
                p.unlink()
            except FileNotFoundError:
                continue
            removed.append(p)
    if not removed:
        raise ApiError(f"no client key '{name}' in {cluster.keys_dir / 'clients'}", ExitCode.NOT_FOUND)
    return removed


def load_client_key(cluster: ClusterConfig, key: str | None = None, role: str | None = None) -> ClientKey:
    """The key to use: ``key`` (a ``.key_secret`` path, or ``$PYHA_KEY``), else the first readable
    key of ``role`` (admin, then read-only, when no role is asked for).

    With no role asked for and no client key at all, a node's own key pair
    (``keys/<node>.key_secret``) serves: whoever can read it is root on a
    cluster host and could speak as that node anyway (members are admins).
    """
    key = key or os.environ.get(ENV_KEY) or None
    candidates: list[tuple[Path, str]] = []
    if key:
        p = Path(key)
        guessed = p.parent.name if p.parent.name in ROLES else "unknown"
        candidates.append((p, guessed))
    else:
        for r in (role,) if role else ROLES:
            candidates += [(p, r) for p in sorted(client_keys_dir(cluster, r).glob("*.key_secret"))]
        if role is None:
            candidates += [(cluster.keys_dir / f"{n}.key_secret", ROLE_ADMIN) for n in sorted(cluster.nodes)]
    last: ApiError | None = None
    for path, r in candidates:
        try:
            return _load_pair(path, r)
        except ApiError as e:
            if key:
                raise
            last = e
    if last is not None and not isinstance(last.__cause__, FileNotFoundError):
        raise last
    which = f"{role} " if role else ""
    raise ApiError(
        f"no usable {which}client key in {cluster.keys_dir / 'clients'} "
        f"(create one: ha-manager keygen NAME --role admin|readonly)",
        ExitCode.FORBIDDEN,
    )


def _load_pair(path: Path, role: str) -> ClientKey:
    name = path.name.removesuffix(".key_secret")
    try:
        mode = path.stat().st_mode & 0o777
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise ApiError(
            f"cannot read client key {path}: {getattr(e, 'strerror', e)}", ExitCode.FORBIDDEN
        ) from e
    if mode & 0o077:
        raise ApiError(f"{path} is accessible by group/others (mode {mode:o}); chmod 600", ExitCode.FORBIDDEN)
    keys = _parse_keys(text, path, ExitCode.FORBIDDEN)
    if "secret" not in keys:
        raise ApiError(f"{path}: no secret-key line", ExitCode.FORBIDDEN)
    return ClientKey(name, role, keys["public"], keys["secret"], path)


def _read_key_file(path: Path, code: int) -> dict[str, bytes]:
    """The ``public-key``/``secret-key`` lines of a zmq certificate file (bus/keys.py format)."""
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise ApiError(f"cannot read {path}: {e}", code) from None
    return _parse_keys(text, path, code)


def _parse_keys(text: str, path: Path, code: int) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for line in text.splitlines():
        k, eq, v = line.strip().partition("=")
        k = k.strip()
        if eq and k in ("public-key", "secret-key"):
            value = v.strip().strip('"')
            if len(value) == 40:
                out[k.removesuffix("-key")] = value.encode("ascii")
    if "public" not in out:
        raise ApiError(f"{path}: no public-key line", code)
    return out


def server_key(cluster: ClusterConfig, node: str) -> bytes:
    return _read_key_file(cluster.keys_dir / f"{node}.key", ExitCode.UNREACHABLE)["public"]


class _Conn:
    """One DEALER to one node, with a monitor telling whether the handshake completed."""

    def __init__(
        self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, curve: tuple[bytes, ClientKey] | None
    ):
        self.sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 100)
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        # a reply is one frame within the codec's limit; libzmq drops a connection sending more
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_IN_BYTES)
        if curve is not None:
            srv, key = curve
            self.sock.setsockopt(zmq.CURVE_SERVERKEY, srv)
            self.sock.setsockopt(zmq.CURVE_PUBLICKEY, key.public)
            self.sock.setsockopt(zmq.CURVE_SECRETKEY, key.secret)
        self.mon: zmq.Socket[bytes] = self.sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED
            | _HANDSHAKE_FAIL
            | zmq.EVENT_DISCONNECTED
            | zmq.EVENT_CONNECT_RETRIED
        )
        self.up = False
        self.auth_failed = False
        self.refused = False  # the TCP connect was refused: nothing listens there
        self.sock.connect(endpoint)

    def wait_up(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.up:
            left = deadline - time.monotonic()
            if left <= 0 or not self.mon.poll(int(left * 1000) + 1):
                return self.up
            self._event()
            if self.auth_failed or self.refused:
                return False  # no point waiting: zmq would only retry the same
        return True

    def _event(self) -> None:
        # a monitor message: [uint16 event, uint32 value] + [endpoint]
        frames = self.mon.recv_multipart()
        kind = int.from_bytes(frames[0][:2], "little")
        if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.up = True
        elif kind == zmq.EVENT_CONNECT_RETRIED:
            self.refused = not self.up
        elif kind == zmq.EVENT_DISCONNECTED:
            self.up = False
        elif kind & _HANDSHAKE_FAIL:
            self.up = False
            self.auth_failed = self.auth_failed or kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH
            if kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                self.auth_failed = True  # a CURVE server refusing our key hangs up without detail

    def drain_events(self) -> None:
        while self.mon.poll(0):
            self._event()

    def close(self) -> None:
        self.sock.disable_monitor()
        self.mon.close(linger=0)
        self.sock.close(linger=0)


class ApiClient:
    """Talks to the nodes of one cluster. Not thread-safe; reuse it for many calls."""

    def __init__(
        self,
        cluster: ClusterConfig,
        *,
        key: ClientKey | None = None,
        prefer: str | None = None,
        timeout: float = 5.0,
        connect_timeout: float = 1.0,
        name: str | None = None,
    ) -> None:
        self.cluster = cluster
        self.key = key
        if cluster.curve and key is None:
            self.key = load_client_key(cluster)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.name = name or f"ha-manager-{os.getpid()}"
        if self.name in cluster.nodes:
            raise ApiError(f"client name '{self.name}' is a member name", ExitCode.USAGE)
        prefer = prefer or os.environ.get(ENV_NODE) or None
        if prefer is not None and prefer not in cluster.nodes:
            raise ApiError(
                f"unknown node '{prefer}' (nodes: {', '.join(sorted(cluster.nodes))})", ExitCode.USAGE
            )
        self.order = sorted(cluster.nodes, key=lambda n: (n != prefer, n))
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.conns: dict[str, _Conn] = {}
        self.ids = itertools.count(1)
        try:
            # the envelope is the codec's (docs/PROTOCOL.md): built and checked in one place
            self.codec = Codec(cluster.cluster)
        except ConfigError as e:
            raise ApiError(f"cluster id {cluster.cluster!r}: {e}", ExitCode.USAGE) from None
        self.node: str | None = None  # the node that answered last

    @property
    def role(self) -> str:
        return self.key.role if self.key is not None else ROLE_ADMIN

    def close(self) -> None:
        for c in self.conns.values():
            c.close()
        self.conns.clear()
        self.ctx.term()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _conn(self, node: str) -> _Conn:
        c = self.conns.get(node)
        if c is None:
            curve = None
            if self.cluster.curve:
                assert self.key is not None
                curve = (server_key(self.cluster, node), self.key)
            c = self.conns[node] = _Conn(self.ctx, self.cluster.nodes[node], curve)
        return c

    def _drop(self, node: str) -> None:
        c = self.conns.pop(node, None)
        if c is not None:
            c.close()

    def _candidates(self) -> Iterator[str]:
        # the node that answered last first: its connection is warm
        if self.node is not None:
            yield self.node
        yield from (n for n in self.order if n != self.node)

    def call(self, op: str, args: Mapping[str, Any] | None = None, *, node: str | None = None) -> Any:
        """Run ``op`` on a node (``node`` only, or any with failover); return its result."""
        write = op not in READ_OPS
        errors: list[str] = []
        no_quorum: ApiError | None = None
        busy: ApiError | None = None
        auth_failed: list[str] = []
        nodes = [node] if node is not None else list(self._candidates())
        for n in nodes:
            conn = self._conn(n)
            conn.drain_events()
            if not conn.up and not conn.wait_up(self.connect_timeout):
                errors.append(f"{n}: no connection")
                if conn.auth_failed:
                    auth_failed.append(n)
                self._drop(n)
                continue
            request_id = uuid.uuid4().hex
            try:
                frame = self.codec.encode(
                    self.name, next(self.ids), ApiRequest(request_id, op, dict(args or {}))
                )
            except ProtocolError as e:  # arguments msgpack cannot carry, or over the frame limit
                raise ApiError(f"'{op}': the request cannot be sent: {e}", ExitCode.USAGE) from None
            try:
                conn.sock.send(frame, zmq.NOBLOCK)
            except zmq.Again:
                errors.append(f"{n}: cannot send")
                self._drop(n)
                continue
            reply = self._wait_reply(conn, request_id)
            if reply is None:
                self._drop(n)
                if write:
                    raise ApiError(
                        f"no answer from {n} within {self.timeout:g}s: '{op}' may or may not have been "
                        "applied (check with 'ha-manager status' / 'config')",
                        ExitCode.UNREACHABLE,
                    )
                errors.append(f"{n}: no answer within {self.timeout:g}s")
                continue
            self.node = n
            if reply.ok:
                return reply.result
            res: dict[str, Any] = reply.result if isinstance(reply.result, dict) else {}
            err = ApiError(
                str(reply.error or "request failed"),
                int(res.get("code", 1)),
                str(res.get("reason")) if res.get("reason") else None,
                [str(d) for d in res.get("details") or []],
            )
            if err.reason == "no_quorum" and node is None:
                no_quorum = err  # nothing was applied: another node may be quorate
                continue
            if err.reason == "busy":  # not run (docs/API.md "Busy"): another node may have room
                busy = err
                if node is None:
                    continue
            raise err
        if busy is not None:
            raise busy
        if no_quorum is not None:
            raise ApiError(f"no quorum: {no_quorum.message}", ExitCode.UNREACHABLE, "no_quorum")
        if auth_failed and len(auth_failed) == len(nodes):
            who = self.key.path if self.key is not None else "?"
            raise ApiError(
                f"the cluster refused the client key {who} (unknown or revoked)",
                ExitCode.FORBIDDEN,
            )
        raise ApiError(f"cluster unreachable ({'; '.join(errors)})", ExitCode.UNREACHABLE, "unreachable")

    def _wait_reply(self, conn: _Conn, request_id: str) -> ApiReply | None:
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not conn.sock.poll(int(left * 1000) + 1):
                return None
            raw = conn.sock.recv()
            try:
                body = self.codec.decode(raw).body
            except ProtocolError:  # not for us / garbage: keep waiting
                continue
            if isinstance(body, ApiReply) and body.request_id == request_id:
                return body
            # another kind, or a late reply to an earlier, timed-out request: ignore it

    # -- events ---------------------------------------------------------------------------
    def subscribe(self, topics: tuple[str, ...] = ("",)) -> tuple[zmq.Socket[bytes], str]:
        """A SUB socket on the event stream of the node answering ``info``; (socket, node)."""
        info = self.call("info")
        endpoint = info.get("events")
        node = str(info.get("node"))
        if not endpoint:
            raise ApiError(f"node {node} publishes no events", ExitCode.UNREACHABLE)
        sub: zmq.Socket[bytes] = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.MAXMSGSIZE, MAX_IN_BYTES)
        if self.cluster.curve:
            assert self.key is not None
            sub.setsockopt(zmq.CURVE_SERVERKEY, server_key(self.cluster, node))
            sub.setsockopt(zmq.CURVE_PUBLICKEY, self.key.public)
            sub.setsockopt(zmq.CURVE_SECRETKEY, self.key.secret)
        for t in topics:
            sub.setsockopt(zmq.SUBSCRIBE, t.encode())
        sub.connect(str(endpoint))
        return sub, node


def decode_event(frames: list[bytes]) -> dict[str, Any] | None:
    if len(frames) != 2:
        return None
    try:
        ev = msgpack.unpackb(frames[1], raw=False)
    except Exception:
        return None
    return ev if isinstance(ev, dict) else None


def format_event(ev: Mapping[str, Any]) -> str:
    """One line for humans (the watch view, ``ha-manager events``)."""
    t = ev.get("type")
    when = time.strftime("%H:%M:%S", time.localtime(float(ev.get("time") or 0)))
    if t == "service":
        where = ev.get("node") or "-"
        if ev.get("target"):
            where = f"{where} -> {ev['target']}"
        old, new = ev.get("old_state") or "-", ev.get("state") or "removed"
        return f"{when} service {ev.get('sid')}: {old} -> {new} ({where})"
    if t == "node":
        return f"{when} node {ev.get('node')}: {ev.get('old') or '-'} -> {ev.get('new') or 'removed'}"
    if t == "master":
        return f"{when} master: {ev.get('old') or '-'} -> {ev.get('new') or '-'}"
    if t == "fence":
        return f"{when} fencing {ev.get('node')}: {ev.get('phase')}"
    if t == "lrm":
        return (
            f"{when} lrm {ev.get('node')}: {ev.get('old_state') or '-'}/{ev.get('old_mode') or '-'} -> "
            f"{ev.get('state') or '-'}/{ev.get('mode') or '-'}"
        )
    if t == "quorum":
        return f"{when} quorum on {ev.get('source')}: {'OK' if ev.get('quorate') else 'lost'}"
    if t == "disarm":
        new = ev.get("new")
        if isinstance(new, dict):
            return f"{when} disarm: {new.get('state')} (mode {new.get('mode')})"
        return f"{when} disarm: armed"
    return f"{when} {t}"
