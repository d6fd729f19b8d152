"""The node's API: answers ``ApiRequest`` messages from tools (docs/API.md).

Requests arrive on the bus (members, or authenticated clients through the
node's ROUTER); the ApiActor runs them off the bus I/O thread and replies
with an ``ApiReply`` through the transport. Operations:

- ``status``: the ``ha-manager status`` lines as seen by this node.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka
from loguru import logger

from bus.codec import Envelope
from bus.messages import ApiReply, ApiRequest
from ha.errors import HaError
from ha.status import status_lines
from store import admin
from store.base import Store


@dataclass(frozen=True)
class Request:
    env: Envelope


class ApiActor(pykka.ThreadingActor):
    def __init__(
        self,
        node: str,
        nodes: list[str],
        store: Store,
        quorate: Callable[[], bool],
        reply: Callable[[Envelope, ApiReply], object],
    ) -> None:
        super().__init__()
        self.node = node
        self.nodes = nodes
        self.store = store
        self.quorate = quorate
        self.reply = reply
        self.log = logger.bind(ident=f"{node}/api")
        self.ops: dict[str, Callable[[dict[str, Any]], Any]] = {"status": self.op_status}

    def on_receive(self, message: object) -> None:
        if not isinstance(message, Request):
            return
        req = message.env.body
        assert isinstance(req, ApiRequest)
        op = self.ops.get(req.op)
        try:
            if op is None:
                raise admin.AdminError(f"unknown operation '{req.op}'", admin.EXIT_USAGE)
            reply = ApiReply(req.request_id, True, op(dict(req.args)))
        except admin.AdminError as e:
            reply = ApiReply(req.request_id, False, {"code": e.code}, str(e))
        except HaError as e:
            reply = ApiReply(req.request_id, False, {"code": admin.EXIT_UNREACHABLE}, str(e))
        except Exception as e:  # a bug must answer, not hang the client
            self.log.opt(exception=e).error(f"api operation '{req.op}' failed: {e}")
            reply = ApiReply(req.request_id, False, {"code": 1}, f"internal error: {e}")
        self.reply(message.env, reply)

    def op_status(self, args: dict[str, Any]) -> Any:
        snap = admin.snapshot(self.store, self.nodes)
        lines = status_lines(
            node=self.node, quorate=self.quorate(), ms=snap.ms, lrm=snap.lrm, conf=snap.conf,
            now=time.time(), fmt_time=time.ctime,
        )  # fmt: skip
        return [ln.to_dict() | {"text": ln.text()} for ln in lines]
