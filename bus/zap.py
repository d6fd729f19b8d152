"""Who a CURVE client is: the ZAP handler of a node's CURVE server sockets.

libzmq asks the handler bound at :data:`ZAP_ENDPOINT` (in the socket's
context) about every CURVE handshake and admits the client only on a "200".
The answer's User-Id is the name whose public key the client proved it owns;
libzmq stamps it on every frame of that connection, and that, not a routing
id, is what makes a frame a member's (docs/PROTOCOL.md, section 2 "Authentication (CURVE)").
The transport puts it on each envelope (``Envelope.user``), so the API reads
the caller's role from there.

The keys come from a :class:`bus.keys.KeyRing`, refreshed before every
handshake: a key removed from the key directory is refused from the next
handshake on (revocation without a restart).

Used by the bus ROUTER (one of the I/O thread's quiet sockets,
:mod:`bus.transport`) and by the event stream's PUB socket
(:mod:`actors.events`); each socket's thread alone reads and answers its handler.

Why not ``zmq.auth``: its authenticators run their own thread (or asyncio
loop) and keep a static set of allowed keys per domain; ours answers inside
the I/O thread's poll loop (no extra thread, no lock), maps a key to its
owner's name for the User-Id, and re-reads the key directory on change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import zmq
from zmq.utils import z85

from bus.keys import KeyRing
from bus.ratelog import RateLimitedLog

ZAP_ENDPOINT = "inproc://zeromq.zap.01"


class ZapHandler:
    """Answers ZAP requests: CURVE only, and only the keys of ``authorized``.

    ``authorized`` is a :class:`KeyRing` (refreshed before each answer) or a
    fixed map of each name to its Z85 public key; ``count`` receives
    ``auth_denied`` for each refusal.
    """

    def __init__(
        self,
        node: str,
        authorized: KeyRing | Mapping[str, bytes],
        count: Callable[[str], None],
        rlog: RateLimitedLog,
    ) -> None:
        self.node = node
        self.ring = authorized if isinstance(authorized, KeyRing) else KeyRing(authorized)
        self._count = count
        self._rlog = rlog

    def open(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> zmq.Socket[bytes]:
        """Bind the handler's REP socket in ``ctx``; closed again if that fails."""
        # SAFETY: this must happen before any CURVE server socket of ctx binds;
        # libzmq lets every CURVE client in when no handler exists.
        zap = ctx.socket(zmq.REP)
        try:
            zap.setsockopt(zmq.LINGER, 0)
            zap.bind(ZAP_ENDPOINT)
        except BaseException:
            zap.close(linger=0)  # an unclosed socket would make Context.term() hang
            raise
        return zap

    def handle(self, zap: zmq.Socket[bytes]) -> None:
        """Read one request from ``zap`` and answer it."""
        req = zap.recv_multipart()
        reply_id = req[1] if len(req) > 1 else b""
        status, text, user = b"500", b"internal error", b""
        try:
            status, text, user = self.authenticate(req)
        finally:
            # A REP socket that skips a reply is wedged for good, and every
            # later handshake would hang: always answer, even after a bug.
            zap.send_multipart([b"1.0", reply_id, status, text, user, b""])

    def authenticate(self, req: list[bytes]) -> tuple[bytes, bytes, bytes]:
        """``(status, status text, user id)`` for one ZAP request (RFC 27)."""
        if len(req) < 6 or req[0] != b"1.0":
            return b"500", b"bad ZAP request", b""
        address = req[3].decode("ascii", "replace")
        if req[5] != b"CURVE" or len(req) != 7 or len(req[6]) != 32:
            self._count("auth_denied")
            self._rlog.warning(
                ("zap", address),
                "bus {}: refused {} (mechanism {})",
                self.node,
                address,
                req[5].decode("ascii", "replace"),
            )
            return b"400", b"CURVE required", b""
        key = z85.encode(req[6])
        self.ring.refresh()  # a key revoked a moment ago is refused now
        name = self.ring.name_of(key)
        if name is None:
            self._count("auth_denied")
            self._rlog.warning(
                ("zap", address),
                "bus {}: refused {}: unknown CURVE key {}",
                self.node,
                address,
                key.decode("ascii"),
            )
            return b"400", b"unknown key", b""
        return b"200", b"OK", name.encode()
