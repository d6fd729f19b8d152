"""The node's API for tools: ``ApiRequest`` in, ``ApiReply`` out (docs/API.md is the contract).

Every node serves it. Requests arrive on the bus (authenticated clients
connect a DEALER to the node's ROUTER, see docs/PROTOCOL.md);
``actors/node.py`` hands each one to the :class:`ApiActor`, which runs it off
the bus I/O thread and replies through the transport. The actor only
decides the caller's role and turns the outcome into a reply: the
operations themselves are :class:`admin.ops.ApiOps`. It also owns the node's
event stream (:class:`actors.events.EventPublisher`).

Roles. A client key's owner name (the ZAP User-Id, which the bus puts on
each envelope as ``Envelope.user``, :mod:`bus.zap`) says its role: keys in
``keys/clients/admin/`` are ``admin/<name>``, keys in
``keys/clients/readonly/`` are ``readonly/<name>``. Members are admins,
every other key read-only. Without CURVE (tests only) every caller is an admin.
The operations between members (:data:`actors.peer.MEMBER_OPS`, e.g. live
migration's ``vm_incoming``) are refused to every client key, admin or not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pykka
import zmq
from loguru import logger

from actors.events import EventPublisher
from actors.peer import MEMBER_OPS
from admin.cluster import ClusterConfig
from admin.errors import AdminError, ExitCode
from admin.ops import ROLE_ADMIN, ROLE_READONLY, ApiOps, error_result
from bus.codec import Envelope
from bus.messages import ApiReply, ApiRequest
from ha.errors import ConfigError, HaError
from ha.records import ManagerStatus
from store.base import Store

# -- roles ----------------------------------------------------------------------------------


def role_of(user: str | None, members: frozenset[str], curve: bool) -> str:
    """The role of an authenticated key owner (see the module doc)."""
    if not curve:
        return ROLE_ADMIN  # no authentication at all (tests only)
    if user is None:
        return ROLE_READONLY  # cannot tell: least privilege
    if user in members:
        return ROLE_ADMIN
    return ROLE_ADMIN if user.startswith(ROLE_ADMIN + "/") else ROLE_READONLY


# -- admission (docs/API.md "Busy") ------------------------------------------------------------

BUSY_REASON = "busy"


class ApiQueue:
    """The API actor's bounded mailbox: at most ``per_client`` requests pending per client, ``total`` in all.

    The node's bus subscriber (``actors/node.py``) asks :meth:`admit` before it
    hands a request to the actor, on the bus I/O thread; the actor calls
    :meth:`done` when the request is answered. A client is its key's owner
    (``Envelope.user``), or without CURVE the sender name it gives.
    """

    def __init__(self, per_client: int = 32, total: int = 256) -> None:
        self.per_client, self.total = per_client, total
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}
        self._all = 0
        self.refused = 0

    @staticmethod
    def client(env: Envelope) -> str:
        return env.user if env.user is not None else env.sender

    def admit(self, env: Envelope) -> str | None:
        """None if ``env`` may be queued (and count it), else why not (one line)."""
        who = self.client(env)
        with self._lock:
            mine = self._pending.get(who, 0)
            if mine >= self.per_client:
                why = f"{mine} requests of this client are pending (at most {self.per_client})"
            elif self._all >= self.total:
                why = f"{self._all} requests are pending (at most {self.total})"
            else:
                self._pending[who] = mine + 1
                self._all += 1
                return None
            self.refused += 1
            return why

    def done(self, env: Envelope) -> None:
        who = self.client(env)
        with self._lock:
            left = self._pending.get(who, 0) - 1
            if left < 0:
                return
            self._all -= 1
            if left:
                self._pending[who] = left
            else:
                del self._pending[who]


def busy_reply(node: str, env: Envelope, why: str) -> ApiReply | None:
    """The answer to a request refused by :meth:`ApiQueue.admit`: code 6, reason ``busy``."""
    if not isinstance(env.body, ApiRequest):
        return None
    err = AdminError(f"{node} is busy: {why}; try again later", ExitCode.UNREACHABLE, reason=BUSY_REASON)
    return ApiReply(env.body.request_id, False, error_result(err), str(err))


# -- the actor --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Members:
    """The cluster's members changed (``ha-cluster add-node``/``remove-node``; actors/members.py)."""

    endpoints: dict[str, str]


@dataclass(frozen=True)
class Request:
    env: Envelope


@dataclass(frozen=True)
class StatusWritten:
    """The master wrote this manager status (hook in actors/node.py, see docs/API.md "Events")."""

    ms: ManagerStatus


class ApiActor(pykka.ThreadingActor):
    def __init__(
        self,
        node: str,
        nodes: list[str],
        store: Store,
        quorate: Callable[[], bool],
        reply: Callable[[Envelope, ApiReply], object],
        cluster: ClusterConfig,
        queue: ApiQueue | None = None,
        last_seen: Mapping[str, float] | None = None,
        member_ops: Mapping[str, Callable[[str, Mapping[str, Any]], Any]] | None = None,
    ) -> None:
        super().__init__()
        self.queue = queue
        self.member_ops = dict(member_ops or {})
        self.node = node
        self.nodes = nodes
        self.store = store
        self.quorate = quorate
        self.reply = reply
        self.log = logger.bind(ident=f"{node}/api")
        self.cluster = cluster
        self.curve = cluster.curve
        self.members = frozenset(nodes)
        self.publisher: EventPublisher | None = EventPublisher(node, cluster, store, quorate)
        self.api = ApiOps(
            node,
            nodes,
            store,
            quorate,
            cluster=cluster.cluster,
            endpoints=cluster.nodes,
            events_endpoint=lambda: self.publisher.endpoint if self.publisher is not None else None,
            lease_ttl=cluster.timing.lease_ttl,
            last_seen=last_seen,
        )

    def on_start(self) -> None:
        if self.publisher is not None:
            try:
                self.publisher.start()
            except (zmq.ZMQError, HaError, OSError) as e:
                self.log.error(f"event publisher not started: {e}")
                self.publisher = None

    def on_stop(self) -> None:
        if self.publisher is not None:
            self.publisher.stop()

    def on_failure(self, exception_type: object, exception_value: object, traceback: object) -> None:
        # the supervisor starts a new actor with a new publisher: free this one's sockets
        self.log.error(f"api actor stopped by {exception_value!r}")
        self.on_stop()

    def user_of(self, env: Envelope) -> str | None:
        """The owner of the key the request came with (the bus sets it, ``Envelope.user``)."""
        return env.user

    def on_receive(self, message: object) -> None:
        """Never lets an exception stop the actor (issue #10): it is logged, a request answered.

        (pykka stops an actor whose handler raises; every later request would then
        be dropped without a word. The node's supervisor restarts a dead API actor
        too, ``actors/node.py``, for what this cannot catch.)
        """
        deferred = False
        try:
            deferred = self._receive(message)
        except Exception as e:
            self._failed(message, e)
        finally:
            if self.queue is not None and isinstance(message, Request) and not deferred:
                self.queue.done(message.env)

    def _failed(self, message: object, e: Exception) -> None:
        self.log.opt(exception=e).error(f"api actor: unexpected error, still serving: {e}")
        if isinstance(message, Request) and isinstance(message.env.body, ApiRequest):
            err = AdminError(f"internal error: {e}", ExitCode.FAILED)
            try:
                self.reply(
                    message.env, ApiReply(message.env.body.request_id, False, error_result(err), str(err))
                )
            except Exception as e2:
                self.log.error(f"api actor: the internal-error reply was not sent either: {e2}")

    def _member_call(self, env: Envelope, req: ApiRequest, user: str | None) -> Any:
        """An operation between members (docs/API.md "Between members"): refused to any client key."""
        who = user if self.curve else env.sender  # with CURVE: the member whose key signed the request
        if who is None or who not in self.members or who == self.node:
            raise AdminError(
                f"permission denied: operation '{req.op}' is for cluster members only", ExitCode.FORBIDDEN
            )
        fn = self.member_ops.get(req.op)
        if fn is None:
            raise AdminError(f"operation '{req.op}' is not served by node '{self.node}'", ExitCode.REFUSED)
        return fn(who, dict(req.args))

    def _receive(self, message: object) -> bool:
        """Handle ``message``; True when a thread of its own answers the request (see below)."""
        if isinstance(message, Members):
            self.nodes = sorted(message.endpoints)
            self.members = frozenset(message.endpoints)
            self.api.nodes, self.api.endpoints = list(self.nodes), dict(message.endpoints)
            return False
        if isinstance(message, StatusWritten):
            if self.publisher is not None:
                self.publisher.feed(message.ms)
            return False
        if not isinstance(message, Request):
            return False
        req = message.env.body
        assert isinstance(req, ApiRequest)
        if req.op in MEMBER_OPS:
            # off the actor's thread: a live migration's ``listen`` launches a QEMU (tens of ms) while
            # this node's API goes on answering (issue #12); the operation keeps its own locks
            threading.Thread(
                target=self._answer_deferred, args=(message,), name=f"{self.node}/api-{req.op}", daemon=True
            ).start()
            return True
        self._answer(message)
        return False

    def _answer_deferred(self, message: Request) -> None:
        try:
            self._answer(message)
        except Exception as e:
            self._failed(message, e)
        finally:
            if self.queue is not None:
                self.queue.done(message.env)

    def _answer(self, message: Request) -> None:
        req = message.env.body
        assert isinstance(req, ApiRequest)
        user = self.user_of(message.env)
        role = role_of(user, self.members, self.curve)
        try:
            if req.op in MEMBER_OPS:
                result = self._member_call(message.env, req, user)
            else:
                result = self.api.call(req.op, dict(req.args), role)
            reply = ApiReply(req.request_id, True, result)
        except AdminError as e:
            reply = ApiReply(req.request_id, False, error_result(e), str(e))
        except ConfigError as e:  # a stored config file the operation cannot use (e.g. not UTF-8)
            err = AdminError(str(e), ExitCode.REFUSED)
            reply = ApiReply(req.request_id, False, error_result(err), str(err))
        except HaError as e:
            err = AdminError(str(e), ExitCode.UNREACHABLE)
            reply = ApiReply(req.request_id, False, error_result(err), str(err))
        except Exception as e:  # a bug must answer, not hang the client
            self.log.opt(exception=e).error(f"api operation '{req.op}' failed: {e}")
            err = AdminError(f"internal error: {e}", ExitCode.FAILED)
            reply = ApiReply(req.request_id, False, error_result(err), str(err))
        if req.op not in ("info", "status", "config", "groups", "rules", "datacenter"):
            outcome = "ok" if reply.ok else f"refused: {reply.error}"
            self.log.info(f"api {req.op} by {user or message.env.sender} ({role}): {outcome}")
        try:
            self.reply(message.env, reply)
        except HaError as e:  # e.g. a reply too large for a frame
            self.log.error(f"api reply to '{req.op}' not sent: {e}")
