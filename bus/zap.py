"""Who a CURVE client is: the ZAP handler of a node's ROUTER.

libzmq asks the handler bound at :data:`ZAP_ENDPOINT` (in the socket's
context) about every CURVE handshake and admits the client only on a "200".
The answer's User-Id is the name whose public key the client proved it owns;
libzmq stamps it on every frame of that connection, and that, not a routing
id, is what makes a frame a member's (docs/PROTOCOL.md, section 2 "Authentication (CURVE)").

The handler's socket is one of the I/O thread's quiet sockets
(:mod:`bus.transport`): only that thread reads and answers it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import zmq
from zmq.utils import z85

from bus.ratelog import RateLimitedLog

ZAP_ENDPOINT = "inproc://zeromq.zap.01"


class ZapHandler:
    """Answers ZAP requests: CURVE only, and only the keys in ``authorized``.

    ``authorized`` maps each name to its Z85 public key (``CurveKeys.authorized``);
    ``count`` receives ``auth_denied`` for each refusal.
    """

    def __init__(
        self, node: str, authorized: Mapping[str, bytes], count: Callable[[str], None], rlog: RateLimitedLog
    ) -> None:
        self.node = node
        self._key_names = {key: name for name, key in authorized.items()}
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
        name = self._key_names.get(key)
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
