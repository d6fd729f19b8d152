"""The node's API for tools: ``ApiRequest`` in, ``ApiReply`` out, events on a PUB socket.

Every node serves it (docs/API.md is the contract). Requests arrive on the
bus (authenticated clients connect a DEALER to the node's ROUTER, see
docs/PROTOCOL.md); ``actors/node.py`` hands each one to the :class:`ApiActor`,
which runs it off the bus I/O thread and replies through the transport.

Three pieces:

- :class:`ApiOps`: the operations (status, config read and write, service
  and crm commands) over the store, through ``store/admin.py``. Pure
  request -> result; ``ha-manager --offline`` uses it directly on a stopped
  cluster's store.
- :class:`ApiActor`: the pykka actor; decides the caller's role from the
  CURVE key it authenticated with and refuses writes to read-only keys.
- :class:`EventPublisher`: a ZeroMQ PUB socket per node publishing service,
  node, master, fencing, lrm, disarm and quorum changes, derived from the
  records every node shares (manager_status and lrm_status diffs), so it
  needs no hook in the daemons.

Roles. A client key's owner name (the ZAP User-Id, i.e. the key file's name)
says its role: keys in ``keys/clients/admin/`` are ``admin/<name>``, keys in
``keys/clients/readonly/`` are ``readonly/<name>`` (the interim flat copies
``keys/client.<role>.<name>.key`` map the same way). Members are admins.
Without CURVE (tests only) every caller is an admin.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pykka
import zmq
from loguru import logger
from zmq.utils import z85

from admin.cluster import ClusterConfig
from bus.codec import Envelope
from bus.keys import CurveKeys
from bus.messages import ApiReply, ApiRequest
from ha.config.datacenter import parse_datacenter_cfg
from ha.config.resources import ServiceConfig, parse_resources_cfg
from ha.errors import HaError
from ha.records import LrmStatus, ManagerStatus
from ha.status import perl_pretty_json, status_lines
from store import admin
from store import records as rec
from store.admin import AdminError
from store.base import Store

API_VERSION = 1
ROLE_ADMIN = "admin"
ROLE_READONLY = "readonly"
ROLES = (ROLE_ADMIN, ROLE_READONLY)
CLIENT_KEY_PREFIX = "client."  # interim flat key files: keys/client.<role>.<name>.key
# while fed by this node's master (StatusWritten), manager_status changes come from the feed only
FEED_HOLD = 2.0

# -- argument checking ---------------------------------------------------------------------

_STR, _INT, _BOOL, _LIST, _MAP = "str", "int", "bool", "[str]", "map"


def _check_args(op: str, args: Mapping[str, Any], spec: Mapping[str, tuple[str, bool]]) -> dict[str, Any]:
    """Validate ``args`` against ``{name: (type, required)}``: unknown or mistyped args are usage errors."""
    out: dict[str, Any] = {}
    for name in args:
        if name not in spec:
            known = ", ".join(sorted(spec)) or "none"
            raise AdminError(f"{op}: unknown argument '{name}' (known: {known})", admin.EXIT_USAGE)
    for name, (typ, required) in spec.items():
        if name not in args or args[name] is None:
            if required:
                raise AdminError(f"{op}: missing argument '{name}'", admin.EXIT_USAGE)
            continue
        v = args[name]
        ok = (
            (typ == _STR and isinstance(v, str))
            or (typ == _INT and isinstance(v, int) and not isinstance(v, bool))
            or (typ == _BOOL and isinstance(v, bool | int))
            or (typ == _LIST and isinstance(v, list | tuple) and all(isinstance(x, str) for x in v))
            or (typ == _MAP and isinstance(v, dict) and all(isinstance(k, str) for k in v))
        )
        if not ok:
            raise AdminError(f"{op}: argument '{name}' must be of type {typ}", admin.EXIT_USAGE)
        out[name] = v
    return out


def _options(op: str, raw: Mapping[str, Any] | None) -> dict[str, str]:
    """Option maps take str, int or bool values; they travel on as the config's strings."""
    out: dict[str, str] = {}
    for k, v in (raw or {}).items():
        if isinstance(v, bool):
            out[k] = "1" if v else "0"
        elif isinstance(v, int | str):
            out[k] = str(v)
        else:
            raise AdminError(f"{op}: option '{k}' must be a string, integer or boolean", admin.EXIT_USAGE)
    return out


@dataclass(frozen=True)
class OpSpec:
    fn: Callable[[dict[str, Any]], Any]
    args: Mapping[str, tuple[str, bool]]
    write: bool


# -- the operations --------------------------------------------------------------------------


class ApiOps:
    """The API's operations on one node's view of the cluster (docs/API.md)."""

    def __init__(
        self,
        node: str,
        nodes: list[str],
        store: Store,
        quorate: Callable[[], bool],
        *,
        cluster: str = "pyha",
        endpoints: Mapping[str, str] | None = None,
        events_endpoint: Callable[[], str | None] = lambda: None,
        require_quorum: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.nodes = sorted(nodes)
        self.store = store
        self.quorate = quorate
        self.cluster = cluster
        self.endpoints = dict(endpoints or {})
        self.events_endpoint = events_endpoint
        self.require_quorum = require_quorum
        self.clock = clock
        s, i, b, lst, m = _STR, _INT, _BOOL, _LIST, _MAP
        self.ops: dict[str, OpSpec] = {
            # read
            "info": OpSpec(self.op_info, {}, False),
            "status": OpSpec(self.op_status, {"verbose": (b, False)}, False),
            "config": OpSpec(self.op_config, {"type": (s, False), "sid": (s, False)}, False),
            "groups": OpSpec(self.op_groups, {"group": (s, False)}, False),
            "rules": OpSpec(self.op_rules, {"type": (s, False), "resource": (s, False)}, False),
            # write: resources
            "add": OpSpec(self.op_add, {"sid": (s, True), "options": (m, True)}, True),
            "set": OpSpec(
                self.op_set,
                {"sid": (s, True), "options": (m, False), "delete": (lst, False), "digest": (s, False)},
                True,
            ),
            "remove": OpSpec(self.op_remove, {"sid": (s, True), "purge": (b, False)}, True),
            # write: service and crm commands
            "migrate": OpSpec(self.op_migrate, {"sid": (s, True), "node": (s, True)}, True),
            "relocate": OpSpec(self.op_relocate, {"sid": (s, True), "node": (s, True)}, True),
            "crm_command": OpSpec(
                self.op_crm_command,
                {
                    "cmd": (s, True),
                    "sid": (s, False),
                    "node": (s, False),
                    "timeout": (i, False),
                    "mode": (s, False),
                },
                True,
            ),
            # write: groups (legacy) and rules
            "group_add": OpSpec(self.op_group_add, {"group": (s, True), "options": (m, True)}, True),
            "group_set": OpSpec(
                self.op_group_set,
                {"group": (s, True), "options": (m, False), "delete": (lst, False), "digest": (s, False)},
                True,
            ),
            "group_remove": OpSpec(self.op_group_remove, {"group": (s, True)}, True),
            "rule_add": OpSpec(
                self.op_rule_add, {"type": (s, True), "rule": (s, True), "options": (m, True)}, True
            ),
            "rule_set": OpSpec(
                self.op_rule_set,
                {
                    "type": (s, True),
                    "rule": (s, True),
                    "options": (m, False),
                    "delete": (lst, False),
                    "digest": (s, False),
                },
                True,
            ),
            "rule_remove": OpSpec(self.op_rule_remove, {"rule": (s, True)}, True),
        }

    def call(self, op: str, args: Mapping[str, Any], role: str = ROLE_ADMIN) -> Any:
        """Run ``op``; raises :class:`AdminError` (message, code, reason, details) on refusal."""
        spec = self.ops.get(op)
        if spec is None:
            raise AdminError(f"unknown operation '{op}'", admin.EXIT_USAGE)
        checked = _check_args(op, args, spec.args)
        if spec.write:
            if role != ROLE_ADMIN:
                raise AdminError(
                    f"permission denied: operation '{op}' needs an admin key (this key is read-only)",
                    admin.EXIT_FORBIDDEN,
                )
            if self.require_quorum and not self.quorate():
                raise AdminError(
                    f"no quorum on node '{self.node}': the configuration is read-only here",
                    admin.EXIT_UNREACHABLE,
                    reason="no_quorum",
                )
        return spec.fn(checked)

    # -- read ----------------------------------------------------------------------------
    def op_info(self, args: dict[str, Any]) -> Any:
        ms, _ = rec.read_manager_status(self.store)
        return {
            "api_version": API_VERSION,
            "cluster": self.cluster,
            "node": self.node,
            "nodes": self.nodes,
            "endpoints": self.endpoints,
            "quorate": self.quorate(),
            "master": ms.master_node,
            "events": self.events_endpoint(),
            "ops": {name: ("admin" if spec.write else "read") for name, spec in sorted(self.ops.items())},
        }

    def _lenient_config(self) -> tuple[ServiceConfig, str | None, list[str]]:
        """resources.cfg for views: broken sections are reported, the rest still shown."""
        text, version = rec.read_text(self.store, rec.RESOURCES_CFG)
        conf, errors = parse_resources_cfg(text, rec.RESOURCES_CFG, nodes=rec.read_locations(self.store))
        return conf, version, [str(e) for e in errors]

    def _crs_mode(self) -> str:
        text, _ = rec.read_text(self.store, rec.DATACENTER_CFG)
        try:
            return parse_datacenter_cfg(text).crs_mode
        except HaError:
            return "basic"

    def op_status(self, args: dict[str, Any]) -> Any:
        ms, _ = rec.read_manager_status(self.store)
        conf, _, errors = self._lenient_config()
        lrm: dict[str, LrmStatus | None] = {}
        for n in sorted(set(self.nodes) | set(ms.node_status)):
            st = rec.read_lrm_status(self.store, n)
            lrm[n] = None if st.state is None else st
        quorate = self.quorate()
        lines = status_lines(
            node=self.node, quorate=quorate, ms=ms, lrm=lrm, conf=conf, now=self.clock(),
            fmt_time=time.ctime, crs_mode=self._crs_mode(),
        )  # fmt: skip
        out: dict[str, Any] = {
            "node": self.node,
            "quorate": quorate,
            "master": ms.master_node,
            "lines": [ln.to_dict() | {"text": ln.text()} for ln in lines],
        }
        if errors:
            out["errors"] = errors
        if args.get("verbose"):
            full = full_cluster_state(self.node, quorate, ms, lrm)
            out["full"] = full
            out["full_text"] = perl_pretty_json(full)
        return out

    def op_config(self, args: dict[str, Any]) -> Any:
        conf, version, errors = self._lenient_config()
        groups, _ = admin.read_groups(self.store)
        sid = admin.normalize_sid(args["sid"]) if "sid" in args else None
        if sid is not None and sid not in conf.services:
            raise AdminError(f"no such resource '{sid}'", admin.EXIT_NOT_FOUND)
        resources = []
        prop_errors: list[dict[str, str]] = []
        for s, cd in sorted(conf.services.items()):
            if sid is not None and s != sid:
                continue
            if "type" in args and cd.type != args["type"]:
                continue
            resources.append(admin.resource_to_dict(cd))
            if cd.group is not None and cd.group not in groups.groups:
                prop_errors.append(
                    {"sid": s, "property": "group", "message": f"group '{cd.group}' does not exist"}
                )
        return {
            "digest": version or "",
            "resources": resources,
            "errors": errors,
            "property_errors": prop_errors,
        }

    def op_groups(self, args: dict[str, Any]) -> Any:
        groups, version = admin.read_groups(self.store)
        gid = args.get("group")
        if gid is not None and gid not in groups.groups:
            raise AdminError(f"no such group '{gid}'", admin.EXIT_NOT_FOUND)
        return {
            "digest": version or "",
            "migrated": not groups.groups,
            "groups": [admin.group_to_dict(g) for k, g in sorted(groups.groups.items()) if gid in (None, k)],
        }

    def op_rules(self, args: dict[str, Any]) -> Any:
        rules, version = admin.rules_view(self.store, self.nodes, args.get("type"), args.get("resource"))
        return {"digest": version or "", "rules": rules}

    # -- write: resources ----------------------------------------------------------------------
    def op_add(self, args: dict[str, Any]) -> Any:
        cd = admin.add(self.store, args["sid"], _options("add", args["options"]), self.nodes)
        return {"sid": cd.sid, "resource": admin.resource_to_dict(cd)}

    def op_set(self, args: dict[str, Any]) -> Any:
        digest = admin.set_options(
            self.store,
            args["sid"],
            _options("set", args.get("options")),
            list(args.get("delete") or []),
            args.get("digest"),
            self.nodes,
        )
        return {"sid": admin.normalize_sid(args["sid"]), "digest": digest}

    def op_remove(self, args: dict[str, Any]) -> Any:
        touched = admin.remove(self.store, args["sid"], purge=bool(args.get("purge", True)))
        return {"sid": admin.normalize_sid(args["sid"]), "rules": touched}

    # -- write: commands -----------------------------------------------------------------------
    def _move(self, task: str, sid: str, node: str) -> Any:
        m = admin.move(self.store, task, sid, node, self.nodes)
        return {"command": m.line, "comigrated": m.comigrated, "blocking": m.blocking}

    def op_migrate(self, args: dict[str, Any]) -> Any:
        return self._move("migrate", args["sid"], args["node"])

    def op_relocate(self, args: dict[str, Any]) -> Any:
        return self._move("relocate", args["sid"], args["node"])

    def op_crm_command(self, args: dict[str, Any]) -> Any:
        cmd = args["cmd"]

        def need(name: str) -> Any:
            if name not in args:
                raise AdminError(f"crm_command {cmd}: missing argument '{name}'", admin.EXIT_USAGE)
            return args[name]

        if cmd in ("migrate", "relocate"):
            return self._move(cmd, need("sid"), need("node"))
        if cmd == "stop":
            timeout = need("timeout")
            if timeout < 0:
                raise AdminError(f"timeout must be >= 0, got {timeout}", admin.EXIT_USAGE)
            line = f"stop {admin.normalize_sid(need('sid'))} {timeout}"
        elif cmd in ("enable-node-maintenance", "disable-node-maintenance"):
            line = f"{cmd} {need('node')}"
        elif cmd == "disarm-ha":
            mode = need("mode")
            if mode not in ("freeze", "ignore"):
                raise AdminError(f"disarm-ha: mode must be freeze or ignore, got '{mode}'", admin.EXIT_USAGE)
            line = f"disarm-ha {mode}"
        elif cmd == "arm-ha":
            line = "arm-ha"
        else:
            raise AdminError(
                f"unknown crm command '{cmd}' (migrate, relocate, stop, enable-node-maintenance, "
                "disable-node-maintenance, disarm-ha, arm-ha)",
                admin.EXIT_USAGE,
            )
        admin.crm_command(self.store, line, self.nodes)
        return {"command": line}

    # -- write: groups and rules -----------------------------------------------------------------
    def op_group_add(self, args: dict[str, Any]) -> Any:
        g = admin.group_add(self.store, args["group"], _options("group_add", args["options"]), self.nodes)
        return {"group": admin.group_to_dict(g)}

    def op_group_set(self, args: dict[str, Any]) -> Any:
        digest = admin.group_set(
            self.store, args["group"], _options("group_set", args.get("options")),
            list(args.get("delete") or []), self.nodes, args.get("digest"),
        )  # fmt: skip
        return {"group": args["group"], "digest": digest}

    def op_group_remove(self, args: dict[str, Any]) -> Any:
        admin.group_remove(self.store, args["group"])
        return {"group": args["group"]}

    def op_rule_add(self, args: dict[str, Any]) -> Any:
        r = admin.rule_add(
            self.store, args["type"], args["rule"], _options("rule_add", args["options"]), self.nodes
        )
        return {"rule": admin.rule_to_dict(r)}

    def op_rule_set(self, args: dict[str, Any]) -> Any:
        digest = admin.rule_set(
            self.store, args["type"], args["rule"], _options("rule_set", args.get("options")),
            list(args.get("delete") or []), self.nodes, args.get("digest"),
        )  # fmt: skip
        return {"rule": args["rule"], "digest": digest}

    def op_rule_remove(self, args: dict[str, Any]) -> Any:
        admin.rule_remove(self.store, args["rule"])
        return {"rule": args["rule"]}


def full_cluster_state(
    node: str, quorate: bool, ms: ManagerStatus, lrm: Mapping[str, LrmStatus | None]
) -> dict[str, Any]:
    """``status --verbose``'s object: lrm_status, manager_status, quorum (§8)."""
    return {
        "lrm_status": {n: (s.to_dict() if s else None) for n, s in lrm.items()},
        "manager_status": ms.to_dict(),
        "quorum": {"node": node, "quorate": "1" if quorate else "0"},
    }


def error_result(e: AdminError) -> dict[str, Any]:
    return {"code": e.code, "reason": e.reason, "details": e.details}


# -- roles ----------------------------------------------------------------------------------


def role_of(user: str | None, members: frozenset[str], curve: bool) -> str:
    """The role of an authenticated key owner (see the module doc)."""
    if not curve:
        return ROLE_ADMIN  # no authentication at all (tests only)
    if user is None:
        return ROLE_READONLY  # cannot tell: least privilege
    if user in members:
        return ROLE_ADMIN
    if user.startswith(CLIENT_KEY_PREFIX):
        role = user[len(CLIENT_KEY_PREFIX) :].partition(".")[0]
    else:
        role = user.partition("/")[0] if "/" in user else ""
    return ROLE_ADMIN if role == ROLE_ADMIN else ROLE_READONLY


class _UserTap:
    """INTERIM, until the bus carries the key owner on the envelope (``Envelope.user``).

    The transport learns each frame's ZAP User-Id but does not hand it on.
    This wraps its frame handler to remember the User-Id while that frame is
    dispatched, and a kind subscriber (which runs before the node's catch-all
    subscriber that forwards the request to the ApiActor) binds it to that
    very envelope object. Exact per frame: no routing-id guessing.
    """

    MAX_PENDING = 10_000

    def __init__(self, transport: Any) -> None:
        self._current: str | None = None  # only read and written on the bus I/O thread
        self._lock = threading.Lock()
        self._by_env: dict[int, tuple[Envelope, str | None]] = {}
        orig = transport._on_frame

        def on_frame(origin: bytes, data: bytes, user: str | None, *, local: bool = False) -> None:
            self._current = None if local else user
            try:
                orig(origin, data, user, local=local)
            finally:
                self._current = None

        transport._on_frame = on_frame
        transport.subscribe(self._seen, [ApiRequest])

    def _seen(self, env: Envelope) -> None:
        with self._lock:
            if len(self._by_env) >= self.MAX_PENDING:
                self._by_env.clear()
            self._by_env[id(env)] = (env, self._current)

    def user_of(self, env: Envelope) -> str | None:
        with self._lock:
            entry = self._by_env.pop(id(env), None)
        return entry[1] if entry is not None and entry[0] is env else None


# -- the actor --------------------------------------------------------------------------------


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
        cluster: ClusterConfig | None = None,
    ) -> None:
        super().__init__()
        self.node = node
        self.nodes = nodes
        self.store = store
        self.quorate = quorate
        self.reply = reply
        self.log = logger.bind(ident=f"{node}/api")
        self.cluster = cluster if cluster is not None else _cluster_of(store)
        self.curve = self.cluster.curve if self.cluster is not None else False
        self.members = frozenset(nodes)
        self.publisher: EventPublisher | None = None
        if self.cluster is not None:
            self.publisher = EventPublisher(node, self.cluster, store, quorate)
        self.api = ApiOps(
            node,
            nodes,
            store,
            quorate,
            cluster=self.cluster.cluster if self.cluster is not None else "pyha",
            endpoints=self.cluster.nodes if self.cluster is not None else None,
            events_endpoint=lambda: self.publisher.endpoint if self.publisher is not None else None,
        )
        # the key owner of each request: from the envelope once the bus carries it, else the tap
        self.tap: _UserTap | None = None
        transport = getattr(reply, "__self__", None)
        if self.curve and "user" not in Envelope._fields and hasattr(transport, "_on_frame"):
            self.tap = _UserTap(transport)

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

    def user_of(self, env: Envelope) -> str | None:
        if "user" in Envelope._fields:
            user = getattr(env, "user", None)
            return user if isinstance(user, str) else None
        return self.tap.user_of(env) if self.tap is not None else None

    def on_receive(self, message: object) -> None:
        if isinstance(message, StatusWritten):
            if self.publisher is not None:
                self.publisher.feed(message.ms)
            return
        if not isinstance(message, Request):
            return
        req = message.env.body
        assert isinstance(req, ApiRequest)
        user = self.user_of(message.env)
        role = role_of(user, self.members, self.curve)
        try:
            reply = ApiReply(req.request_id, True, self.api.call(req.op, dict(req.args), role))
        except AdminError as e:
            reply = ApiReply(req.request_id, False, error_result(e), str(e))
        except HaError as e:
            err = AdminError(str(e), admin.EXIT_UNREACHABLE)
            reply = ApiReply(req.request_id, False, error_result(err), str(e))
        except Exception as e:  # a bug must answer, not hang the client
            self.log.opt(exception=e).error(f"api operation '{req.op}' failed: {e}")
            err = AdminError(f"internal error: {e}", admin.EXIT_FAILED)
            reply = ApiReply(req.request_id, False, error_result(err), str(err))
        if req.op not in ("info", "status", "config", "groups", "rules"):
            outcome = "ok" if reply.ok else f"refused: {reply.error}"
            self.log.info(f"api {req.op} by {user or message.env.sender} ({role}): {outcome}")
        try:
            self.reply(message.env, reply)
        except HaError as e:  # e.g. a reply too large for a frame
            self.log.error(f"api reply to '{req.op}' not sent: {e}")


def _cluster_of(store: Store) -> ClusterConfig | None:
    """INTERIM: the cluster config next to a dir store (until node.py passes ``cluster=``)."""
    root = getattr(store, "root", None)
    if root is None:
        return None
    base = Path(root).parent
    if not (base / "cluster.json").exists():
        return None
    try:
        return ClusterConfig.load(base)
    except HaError:
        return None


# -- events ---------------------------------------------------------------------------------


def client_key_files(keys_dir: Path) -> dict[str, Path]:
    """Client public keys and their owner names: ``<role>/<name>`` (plus interim flat copies)."""
    out: dict[str, Path] = {}
    for role in ROLES:
        for p in sorted((keys_dir / "clients" / role).glob("*.key")):
            out[f"{role}/{p.name[: -len('.key')]}"] = p
    for p in sorted(keys_dir.glob(f"{CLIENT_KEY_PREFIX}*.key")):
        out[p.name[: -len(".key")]] = p
    return out


def diff_events(
    old_ms: ManagerStatus | None,
    new_ms: ManagerStatus,
    old_lrm: Mapping[str, tuple[str | None, str | None]],
    new_lrm: Mapping[str, tuple[str | None, str | None]],
) -> list[dict[str, Any]]:
    """The events between two views of the shared records (pure; docs/API.md "Events")."""
    if old_ms is None:
        return []
    out: list[dict[str, Any]] = []
    if old_ms.master_node != new_ms.master_node:
        out.append({"type": "master", "old": old_ms.master_node, "new": new_ms.master_node})
    for n in sorted(set(old_ms.node_status) | set(new_ms.node_status)):
        a, b = old_ms.node_status.get(n), new_ms.node_status.get(n)
        if a == b:
            continue
        out.append({"type": "node", "node": n, "old": a, "new": b})
        if b == "fence":
            out.append({"type": "fence", "node": n, "phase": "pending"})
        elif a == "fence":
            out.append({"type": "fence", "node": n, "phase": "done" if b in ("unknown", "online") else b})
    if old_ms.disarm != new_ms.disarm:
        out.append({"type": "disarm", "old": old_ms.disarm, "new": new_ms.disarm})
    for sid in sorted(set(old_ms.service_status) | set(new_ms.service_status)):
        a_sd, b_sd = old_ms.service_status.get(sid), new_ms.service_status.get(sid)
        a_key = (a_sd.state, a_sd.node, a_sd.target) if a_sd else (None, None, None)
        b_key = (b_sd.state, b_sd.node, b_sd.target) if b_sd else (None, None, None)
        if a_key != b_key:
            out.append({
                "type": "service", "sid": sid, "old_state": a_key[0], "old_node": a_key[1],
                "state": b_key[0], "node": b_key[1], "target": b_key[2],
            })  # fmt: skip
    for n in sorted(set(old_lrm) | set(new_lrm)):
        a_l, b_l = old_lrm.get(n, (None, None)), new_lrm.get(n, (None, None))
        if a_l != b_l:
            out.append({
                "type": "lrm", "node": n, "old_state": a_l[0], "old_mode": a_l[1],
                "state": b_l[0], "mode": b_l[1],
            })  # fmt: skip
    return out


class EventPublisher:
    """One node's event stream: a PUB socket, CURVE-protected like the bus.

    Messages have two frames: the topic (the event type, UTF-8; subscribe by
    prefix) and one msgpack map ``{v, cluster, source, seq, time, type, ...}``.
    A ``heartbeat`` every ``heartbeat`` seconds lets subscribers notice a
    silent publisher. The endpoint (an ephemeral port on the node's bus host)
    is announced by the API's ``info`` operation.
    """

    def __init__(
        self,
        node: str,
        cluster: ClusterConfig,
        store: Store,
        quorate: Callable[[], bool],
        *,
        interval: float = 0.05,
        heartbeat: float = 1.0,
    ) -> None:
        self.node = node
        self.cluster = cluster
        self.store = store
        self.quorate = quorate
        self.interval = interval
        self.heartbeat = heartbeat
        self.endpoint: str | None = None
        self.log = logger.bind(ident=f"{node}/events")
        self._stop = threading.Event()
        self._fed: collections.deque[ManagerStatus] = collections.deque(maxlen=1000)
        self._last_feed = -FEED_HOLD
        self._thread: threading.Thread | None = None
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._seq = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"events-{self.node}", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _open(self) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes] | None, dict[bytes, str]]:
        self._ctx = ctx = zmq.Context()
        authorized: dict[bytes, str] = {}
        zap: zmq.Socket[bytes] | None = None
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.setsockopt(zmq.SNDHWM, 1000)
        if self.cluster.curve:
            keys = CurveKeys.load(self.cluster.keys_dir, self.node)
            for name, key in keys.authorized.items():
                authorized[key] = name
            for name, path in client_key_files(self.cluster.keys_dir).items():
                with contextlib.suppress(HaError, ValueError):
                    authorized[_public_key(path)] = name
            # SAFETY: the ZAP handler exists before the socket binds, else libzmq admits any key
            zap = ctx.socket(zmq.REP)
            zap.setsockopt(zmq.LINGER, 0)
            zap.bind("inproc://zeromq.zap.01")
            pub.setsockopt(zmq.CURVE_SERVER, 1)
            pub.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
            pub.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
            pub.setsockopt(zmq.ZAP_DOMAIN, self.cluster.cluster.encode())
            pub.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        host = self.cluster.nodes[self.node].removeprefix("tcp://").rpartition(":")[0] or "127.0.0.1"
        pub.bind(f"tcp://{host}:*")
        self.endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
        return pub, zap, authorized

    def _run(self) -> None:
        try:
            pub, zap, authorized = self._open()
        except BaseException as e:
            self._error = e
            self._ready.set()
            self._close()
            return
        self._ready.set()
        self.log.info(f"events published on {self.endpoint}")
        poller = zmq.Poller()
        if zap is not None:
            poller.register(zap, zmq.POLLIN)
        token: str | None = None
        ms: ManagerStatus | None = None
        lrm: dict[str, tuple[str | None, str | None]] = {}
        quorate: bool | None = None
        next_hb = 0.0
        try:
            while not self._stop.is_set():
                for sock, _ in poller.poll(int(self.interval * 1000)):
                    if sock is zap and zap is not None:
                        _answer_zap(zap, authorized)
                while self._fed:
                    fed = self._fed.popleft()
                    if ms is not None and _newer(fed, ms):
                        for ev in diff_events(ms, fed, lrm, lrm):
                            self._publish(pub, ev)
                        ms = fed
                try:
                    changes = self.store.changed_since(token)
                    token = changes.token
                    names = changes.names
                    if (
                        ms is None
                        or names is None
                        or any(n == rec.MANAGER_STATUS or n.endswith("/lrm_status") for n in names)
                    ):
                        new_ms, _ = rec.read_manager_status(self.store)
                        if ms is not None and (self._fed_recently() or _newer(ms, new_ms)):
                            # this node's master feeds every write: the store could only fold them
                            new_ms = ms
                        new_lrm = {}
                        for n in sorted(set(self.cluster.nodes) | set(new_ms.node_status)):
                            st = rec.read_lrm_status(self.store, n)
                            new_lrm[n] = (st.state, st.mode)
                        for ev in diff_events(ms, new_ms, lrm, new_lrm):
                            self._publish(pub, ev)
                        ms, lrm = new_ms, new_lrm
                except HaError as e:
                    self.log.warning(f"cannot read the records: {e}")
                q = self.quorate()
                if quorate is not None and q != quorate:
                    self._publish(pub, {"type": "quorum", "quorate": q})
                quorate = q
                now = time.monotonic()
                if now >= next_hb:
                    next_hb = now + self.heartbeat
                    master = ms.master_node if ms is not None else None
                    self._publish(pub, {"type": "heartbeat", "quorate": q, "master": master})
        finally:
            self._close(pub, zap)

    def feed(self, ms: ManagerStatus) -> None:
        """Every manager status the master writes (from any thread): no transition is folded."""
        self._last_feed = time.monotonic()
        self._fed.append(ms)

    def _fed_recently(self) -> bool:
        return time.monotonic() - self._last_feed < FEED_HOLD

    def _publish(self, pub: zmq.Socket[bytes], ev: dict[str, Any]) -> None:
        self._seq += 1
        body = {"v": API_VERSION, "cluster": self.cluster.cluster, "source": self.node, "seq": self._seq,
                "time": time.time(), **ev}  # fmt: skip
        with contextlib.suppress(zmq.Again):
            pub.send_multipart([str(ev["type"]).encode(), msgpack.packb(body)], zmq.NOBLOCK)

    def _close(self, *socks: zmq.Socket[bytes] | None) -> None:
        for s in socks:
            if s is not None:
                s.close(linger=0)
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None


def _newer(a: ManagerStatus, b: ManagerStatus) -> bool:
    """Is ``a`` a later write than ``b``? (the master stamps every write)"""
    return a.timestamp is not None and (b.timestamp is None or a.timestamp > b.timestamp)


def _public_key(path: Path) -> bytes:
    for line in path.read_text(encoding="ascii").splitlines():
        key, eq, value = line.strip().partition("=")
        if eq and key.strip() == "public-key":
            return value.strip().strip('"').encode("ascii")
    raise ValueError(f"{path}: no public-key line")


def _answer_zap(zap: zmq.Socket[bytes], authorized: Mapping[bytes, str]) -> None:
    req = zap.recv_multipart()
    reply_id = req[1] if len(req) > 1 else b""
    status, text, user = b"400", b"refused", b""
    if len(req) == 7 and req[0] == b"1.0" and req[5] == b"CURVE" and len(req[6]) == 32:
        name = authorized.get(z85.encode(req[6]))
        if name is not None:
            status, text, user = b"200", b"OK", name.encode()
    zap.send_multipart([b"1.0", reply_id, status, text, user, b""])
