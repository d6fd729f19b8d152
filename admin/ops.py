"""The node API's operations (docs/API.md): status, config reads and edits, service and CRM commands.

:class:`ApiOps` checks each request's arguments, refuses writes from
read-only callers and, when quorum is required, writes on a node without
quorum; then it runs the operation over the store through the other
``admin`` modules. Pure request -> result: the node's API actor
(``actors/api.py``) serves it on the bus, and ``ha-manager --offline`` uses it
directly on a stopped cluster's store. Every refusal is an
:class:`~admin.errors.AdminError` (message, exit code, reason, details).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from admin.commands import crm_command, move
from admin.configfiles import check_node, normalize_sid, read_groups
from admin.datacenter import datacenter_view, set_datacenter
from admin.errors import AdminError, ExitCode
from admin.groups import group_add, group_remove, group_set
from admin.liveness import with_proof_of_life
from admin.placement import place_unplaced
from admin.resources import add_resource, remove_resource, set_resource
from admin.rules import rule_add, rule_remove, rule_set
from admin.views import group_to_dict, resource_to_dict, rule_to_dict, rules_view
from ha.config import schema
from ha.config.datacenter import parse_datacenter_cfg
from ha.config.encoding import decode_config
from ha.config.resources import ServiceConfig, parse_resources_cfg
from ha.config.schema import ConfigSchema, Kind
from ha.errors import HaError
from ha.records import LrmStatus, ManagerStatus
from ha.status import perl_pretty_json, status_lines
from store import records as rec
from store.base import Store

API_VERSION = 1
ROLE_ADMIN = "admin"
ROLE_READONLY = "readonly"
ROLES = (ROLE_ADMIN, ROLE_READONLY)

# -- argument checking ---------------------------------------------------------------------

_STR, _INT, _BOOL, _LIST, _MAP = "str", "int", "bool", "[str]", "map"


def _check_args(op: str, args: Mapping[str, Any], spec: Mapping[str, tuple[str, bool]]) -> dict[str, Any]:
    """Validate ``args`` against ``{name: (type, required)}``: unknown or mistyped args are usage errors."""
    out: dict[str, Any] = {}
    for name in args:
        if name not in spec:
            known = ", ".join(sorted(spec)) or "none"
            raise AdminError(f"{op}: unknown argument '{name}' (known: {known})", ExitCode.USAGE)
    for name, (typ, required) in spec.items():
        if name not in args or args[name] is None:
            if required:
                raise AdminError(f"{op}: missing argument '{name}'", ExitCode.USAGE)
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
            raise AdminError(f"{op}: argument '{name}' must be of type {typ}", ExitCode.USAGE)
        out[name] = v
    return out


def _options(op: str, raw: Mapping[str, Any] | None, schema: ConfigSchema) -> dict[str, str]:
    """An option map, checked against the config type's schema (docs/CONFIG.md).

    Names must be options of ``schema`` (of any section type: which type
    takes which option is the admin layer's refusal); values are strings or
    integers, and booleans for boolean options. They travel on as the
    config's strings; ``admin`` checks each value against its property.
    """
    known = {p.name: p for p in schema.api_props()}
    out: dict[str, str] = {}
    for k, v in (raw or {}).items():
        prop = known.get(k)
        if prop is None:
            names = ", ".join(sorted(known))
            raise AdminError(f"{op}: unknown option '{k}' (known: {names})", ExitCode.USAGE)
        if isinstance(v, bool) and prop.kind == Kind.BOOL:
            out[k] = "1" if v else "0"
        elif isinstance(v, int | str) and not isinstance(v, bool):
            out[k] = str(v)
        else:
            what = "a string, integer or boolean" if prop.kind == Kind.BOOL else "a string or integer"
            raise AdminError(f"{op}: option '{k}' must be {what}", ExitCode.USAGE)
    return out


@dataclass(frozen=True)
class OpSpec:
    fn: Callable[[dict[str, Any]], Any]
    args: Mapping[str, tuple[str, bool]]
    write: bool
    # the schema an ``options`` argument is checked against (resources, groups or rules)
    options: ConfigSchema | None = None


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
        lease_ttl: float | None = None,
        last_seen: Mapping[str, float] | None = None,
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
        self.lease_ttl = lease_ttl
        # node -> wall time of the last message from it over the bus (the live node's view)
        self.last_seen: Mapping[str, float] = last_seen if last_seen is not None else {}
        s, i, b, lst, m = _STR, _INT, _BOOL, _LIST, _MAP
        self.ops: dict[str, OpSpec] = {
            # read
            "info": OpSpec(self.op_info, {}, False),
            "status": OpSpec(self.op_status, {"verbose": (b, False)}, False),
            "config": OpSpec(self.op_config, {"type": (s, False), "sid": (s, False)}, False),
            "groups": OpSpec(self.op_groups, {"group": (s, False)}, False),
            "rules": OpSpec(self.op_rules, {"type": (s, False), "resource": (s, False)}, False),
            "datacenter": OpSpec(self.op_datacenter, {}, False),
            # write: resources
            "add": OpSpec(self.op_add, {"sid": (s, True), "options": (m, True)}, True, schema.RESOURCES),
            "set": OpSpec(
                self.op_set,
                {"sid": (s, True), "options": (m, False), "delete": (lst, False), "digest": (s, False)},
                True,
                schema.RESOURCES,
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
            "group_add": OpSpec(
                self.op_group_add, {"group": (s, True), "options": (m, True)}, True, schema.GROUPS
            ),
            "group_set": OpSpec(
                self.op_group_set,
                {"group": (s, True), "options": (m, False), "delete": (lst, False), "digest": (s, False)},
                True,
                schema.GROUPS,
            ),
            "group_remove": OpSpec(self.op_group_remove, {"group": (s, True)}, True),
            "rule_add": OpSpec(
                self.op_rule_add,
                {"type": (s, True), "rule": (s, True), "options": (m, True)},
                True,
                schema.RULES,
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
                schema.RULES,
            ),
            "rule_remove": OpSpec(self.op_rule_remove, {"rule": (s, True)}, True),
            # write: datacenter.cfg (its options are checked by admin/datacenter.py: LINE.NAME keys)
            "datacenter_set": OpSpec(
                self.op_datacenter_set,
                {"options": (m, False), "delete": (lst, False), "digest": (s, False)},
                True,
            ),
        }

    def call(self, op: str, args: Mapping[str, Any], role: str = ROLE_ADMIN) -> Any:
        """Run ``op``; raises :class:`AdminError` (message, code, reason, details) on refusal."""
        spec = self.ops.get(op)
        if spec is None:
            raise AdminError(f"unknown operation '{op}'", ExitCode.USAGE)
        checked = _check_args(op, args, spec.args)
        if spec.options is not None:
            checked["options"] = _options(op, checked.get("options"), spec.options)
        if spec.write:
            if role != ROLE_ADMIN:
                raise AdminError(
                    f"permission denied: operation '{op}' needs an admin key (this key is read-only)",
                    ExitCode.FORBIDDEN,
                )
            if self.require_quorum and not self.quorate():
                raise AdminError(
                    f"no quorum on node '{self.node}': the configuration is read-only here",
                    ExitCode.UNREACHABLE,
                    reason="no_quorum",
                )
        if spec.write or not self.require_quorum or self.quorate():
            self._place_unplaced()
        return spec.fn(checked)

    def _place_unplaced(self) -> None:
        """Resources written without a node get one before anything reads them (admin/placement.py)."""
        with contextlib.suppress(HaError):  # a store that cannot take the write now: the master will
            place_unplaced(self.store, self.nodes, self.node)

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
        """resources.cfg for views: broken sections (bad bytes too) are reported, the rest still shown."""
        record = self.store.read(rec.RESOURCES_CFG)
        version = None if record is None else record.version
        text, errors = decode_config(b"" if record is None else record.data, rec.RESOURCES_CFG)
        locations = rec.read_locations(self.store)
        conf, parse_errors = parse_resources_cfg(text, rec.RESOURCES_CFG, nodes=locations)
        return conf, version, [str(e) for e in errors + parse_errors]

    def _config_errors(self, resources_errors: list[str]) -> dict[str, tuple[float | None, list[str]]]:
        """Config files with errors: as the master recorded them (with since when), else as read now."""
        out: dict[str, tuple[float | None, list[str]]] = {}
        for name, entry in rec.read_config_errors(self.store).items():
            since = entry.get("since") if isinstance(entry, dict) else None
            errors = entry.get("errors") if isinstance(entry, dict) else None
            if isinstance(errors, list) and errors:
                when = float(since) if isinstance(since, int | float) else None
                out[str(name)] = (when, [str(e) for e in errors])
        if resources_errors and rec.RESOURCES_CFG not in out:
            out[rec.RESOURCES_CFG] = (None, resources_errors)  # not (yet) seen by a master
        return out

    def _crs_mode(self) -> str | None:
        """The configured scheduler mode; None when datacenter.cfg does not read (see its config line)."""
        try:
            text, _ = rec.read_text(self.store, rec.DATACENTER_CFG)
            return parse_datacenter_cfg(text).crs_mode
        except HaError:
            return None

    def _seen(self, node: str) -> float | None:
        """The last word from ``node`` over the bus: now for this node while its cluster is quorate."""
        if node == self.node:
            return self.clock() if self.quorate() else None
        return self.last_seen.get(node)

    def op_status(self, args: dict[str, Any]) -> Any:
        ms, _ = rec.read_manager_status(self.store)
        conf, _, errors = self._lenient_config()
        lrm: dict[str, LrmStatus | None] = {}
        for n in sorted(set(self.nodes) | set(ms.node_status)):
            st = rec.read_lrm_status(self.store, n)
            lrm[n] = None if st.state is None else st
        quorate = self.quorate()
        now = self.clock()
        # the records are written on a change only (issue #17): who is alive comes from leases
        # and the bus (admin/liveness.py); the verbose dump below shows the records as written
        shown_ms, shown_lrm = with_proof_of_life(
            self.store, ms, lrm, now=now, lease_ttl=self.lease_ttl, seen=self._seen
        )
        lines = status_lines(
            node=self.node, quorate=quorate, ms=shown_ms, lrm=shown_lrm, conf=conf, now=now,
            fmt_time=time.ctime, crs_mode=self._crs_mode(), config_errors=self._config_errors(errors),
            node_states=True,
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
        groups, _ = read_groups(self.store)
        sid = normalize_sid(args["sid"]) if "sid" in args else None
        if sid is not None and sid not in conf.services:
            raise AdminError(f"no such resource '{sid}'", ExitCode.NOT_FOUND)
        resources = []
        prop_errors: list[dict[str, str]] = []
        for s, cd in sorted(conf.services.items()):
            if sid is not None and s != sid:
                continue
            if "type" in args and cd.type != args["type"]:
                continue
            resources.append(resource_to_dict(cd))
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
        groups, version = read_groups(self.store)
        gid = args.get("group")
        if gid is not None and gid not in groups.groups:
            raise AdminError(f"no such group '{gid}'", ExitCode.NOT_FOUND)
        return {
            "digest": version or "",
            "groups": [group_to_dict(g) for k, g in sorted(groups.groups.items()) if gid in (None, k)],
        }

    def op_rules(self, args: dict[str, Any]) -> Any:
        rules, version = rules_view(self.store, self.nodes, args.get("type"), args.get("resource"))
        return {"digest": version or "", "rules": rules}

    def op_datacenter(self, args: dict[str, Any]) -> Any:
        return datacenter_view(self.store)

    # -- write: resources ----------------------------------------------------------------------
    def op_add(self, args: dict[str, Any]) -> Any:
        cd = add_resource(self.store, args["sid"], args["options"], self.nodes, local=self.node)
        return {"sid": cd.sid, "resource": resource_to_dict(cd)}

    def op_set(self, args: dict[str, Any]) -> Any:
        digest = set_resource(
            self.store,
            args["sid"],
            args["options"],
            list(args.get("delete") or []),
            args.get("digest"),
            self.nodes,
        )
        return {"sid": normalize_sid(args["sid"]), "digest": digest}

    def op_remove(self, args: dict[str, Any]) -> Any:
        touched = remove_resource(self.store, args["sid"], purge=bool(args.get("purge", True)))
        return {"sid": normalize_sid(args["sid"]), "rules": touched}

    # -- write: commands -----------------------------------------------------------------------
    def _move(self, task: str, sid: str, node: str) -> Any:
        m = move(self.store, task, sid, node, self.nodes)
        return {"command": m.line, "comigrated": m.comigrated, "blocking": m.blocking}

    def op_migrate(self, args: dict[str, Any]) -> Any:
        return self._move("migrate", args["sid"], args["node"])

    def op_relocate(self, args: dict[str, Any]) -> Any:
        return self._move("relocate", args["sid"], args["node"])

    def op_crm_command(self, args: dict[str, Any]) -> Any:
        cmd = args["cmd"]

        def need(name: str) -> Any:
            if name not in args:
                raise AdminError(f"crm_command {cmd}: missing argument '{name}'", ExitCode.USAGE)
            return args[name]

        if cmd in ("migrate", "relocate"):
            return self._move(cmd, need("sid"), need("node"))
        if cmd == "stop":
            timeout = need("timeout")
            if timeout < 0:
                raise AdminError(f"timeout must be >= 0, got {timeout}", ExitCode.USAGE)
            line = f"stop {normalize_sid(need('sid'))} {timeout}"
        elif cmd in ("enable-node-maintenance", "disable-node-maintenance"):
            node = need("node")
            check_node(node, self.nodes)  # before the line is built: never echo a malformed one
            line = f"{cmd} {node}"
        elif cmd == "disarm-ha":
            mode = need("mode")
            if mode not in ("freeze", "ignore"):
                raise AdminError(f"disarm-ha: mode must be freeze or ignore, got '{mode}'", ExitCode.USAGE)
            line = f"disarm-ha {mode}"
        elif cmd == "arm-ha":
            line = "arm-ha"
        else:
            raise AdminError(
                f"unknown crm command '{cmd}' (migrate, relocate, stop, enable-node-maintenance, "
                "disable-node-maintenance, disarm-ha, arm-ha)",
                ExitCode.USAGE,
            )
        crm_command(self.store, line, self.nodes)
        return {"command": line}

    # -- write: groups and rules -----------------------------------------------------------------
    def op_group_add(self, args: dict[str, Any]) -> Any:
        g = group_add(self.store, args["group"], args["options"], self.nodes)
        return {"group": group_to_dict(g)}

    def op_group_set(self, args: dict[str, Any]) -> Any:
        digest = group_set(
            self.store, args["group"], args["options"],
            list(args.get("delete") or []), self.nodes, args.get("digest"),
        )  # fmt: skip
        return {"group": args["group"], "digest": digest}

    def op_group_remove(self, args: dict[str, Any]) -> Any:
        group_remove(self.store, args["group"])
        return {"group": args["group"]}

    def op_rule_add(self, args: dict[str, Any]) -> Any:
        r = rule_add(self.store, args["type"], args["rule"], args["options"], self.nodes)
        return {"rule": rule_to_dict(r)}

    def op_rule_set(self, args: dict[str, Any]) -> Any:
        digest = rule_set(
            self.store, args["type"], args["rule"], args["options"],
            list(args.get("delete") or []), self.nodes, args.get("digest"),
        )  # fmt: skip
        return {"rule": args["rule"], "digest": digest}

    def op_rule_remove(self, args: dict[str, Any]) -> Any:
        rule_remove(self.store, args["rule"])
        return {"rule": args["rule"]}

    # -- write: datacenter.cfg -------------------------------------------------------------------
    def op_datacenter_set(self, args: dict[str, Any]) -> Any:
        options = dict(args.get("options") or {})
        delete = list(args.get("delete") or [])
        digest = set_datacenter(self.store, options, delete, args.get("digest"))
        return {"digest": digest}


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
    """An API error reply's ``result`` (docs/API.md): the code travels as a plain int."""
    return {"code": int(e.code), "reason": e.reason, "details": e.details}
