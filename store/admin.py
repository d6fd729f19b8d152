"""Administrative operations on a cluster's records: what ``ha-manager`` does.

Every edit is validated before it is written, written atomically with a
compare-and-swap on the version that was read (so two concurrent edits
cannot silently overwrite each other), and refused with an
:class:`AdminError` carrying a one-line message and an exit code otherwise.
The CLI and the node's API both call these functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ha.config.crm_commands import parse_crm_command
from ha.config.resources import (
    RESOURCE_TYPES,
    ResourceConfig,
    ServiceConfig,
    format_resources_cfg,
    normalize_state,
    parse_resources_cfg,
    parse_sid,
    resource_from_dict,
)
from ha.config.sectionconfig import parse_bool, parse_uint
from ha.errors import ConfigError, HaError
from ha.records import LrmStatus, ManagerStatus
from ha.states import ServiceState
from store import records as rec
from store.base import Store, VersionConflict

# exit codes of ha-manager (docs/CLI.md)
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_REFUSED = 4
EXIT_CONFLICT = 5
EXIT_UNREACHABLE = 6


class AdminError(HaError):
    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Snapshot:
    """Everything ``status`` needs, read in one go."""

    ms: ManagerStatus
    lrm: dict[str, LrmStatus | None]
    conf: ServiceConfig
    digest: str | None


def read_config(store: Store) -> tuple[ServiceConfig, str | None]:
    text, version = rec.read_text(store, rec.RESOURCES_CFG)
    conf, errors = parse_resources_cfg(text, rec.RESOURCES_CFG, nodes=rec.read_locations(store))
    if errors:
        # a broken section is reported, never silently dropped by an admin tool
        raise AdminError(f"resources.cfg is invalid: {errors[0]}", EXIT_CONFLICT)
    return conf, version


def _edit(
    store: Store, edit: Callable[[ServiceConfig], None], digest: str | None = None, retries: int = 5
) -> None:
    for _ in range(retries):
        text, version = rec.read_text(store, rec.RESOURCES_CFG)
        if digest is not None and digest != (version or ""):
            raise AdminError(
                "resources.cfg was changed by someone else (digest mismatch), re-read it", EXIT_CONFLICT
            )
        conf, errors = parse_resources_cfg(text, rec.RESOURCES_CFG)
        if errors:
            raise AdminError(f"resources.cfg is invalid: {errors[0]}", EXIT_CONFLICT)
        edit(conf)
        try:
            store.write(rec.RESOURCES_CFG, format_resources_cfg(conf).encode(), version or "")
            return
        except VersionConflict:
            if digest is not None:
                raise AdminError(
                    "resources.cfg was changed concurrently, re-read it", EXIT_CONFLICT
                ) from None
    raise AdminError("resources.cfg keeps changing, try again", EXIT_CONFLICT)


def normalize_sid(sid: str) -> str:
    if sid.isdigit():
        sid = f"vm:{sid}"
    try:
        parse_sid(sid)
    except ConfigError as e:
        raise AdminError(e.message, EXIT_USAGE) from None
    return sid


_OPTION_KEYS = ("state", "group", "failback", "max_restart", "max_relocate", "comment", "node")


def add(store: Store, sid: str, options: Mapping[str, str], nodes: list[str]) -> ResourceConfig:
    """``ha-manager add SID [--state ...]``: the resource must not exist; its node must."""
    sid = normalize_sid(sid)
    node = options.get("node")
    if not node:
        raise AdminError(f"resource '{sid}': --node is required", EXIT_USAGE)
    if node not in nodes:
        raise AdminError(f"unknown node '{node}' (nodes: {', '.join(nodes)})", EXIT_NOT_FOUND)
    try:
        cd = resource_from_dict(sid, dict(options), "command line")
    except ConfigError as e:
        raise AdminError(e.message, EXIT_USAGE) from None

    def edit(conf: ServiceConfig) -> None:
        if sid in conf.services:
            raise AdminError(f"resource '{sid}' already defined", EXIT_REFUSED)
        conf.services[sid] = cd

    _edit(store, edit)
    return cd


def set_options(
    store: Store,
    sid: str,
    options: Mapping[str, str],
    delete: list[str],
    digest: str | None = None,
) -> None:
    """``ha-manager set SID ...``: refused in error state unless it sets state disabled (§8)."""
    sid = normalize_sid(sid)
    ms, _ = rec.read_manager_status(store)
    sd = ms.service_status.get(sid)
    if sd is not None and sd.state == ServiceState.ERROR and options.get("state") != "disabled":
        raise AdminError(f"service '{sid}' in error state, must be disabled and fixed first", EXIT_REFUSED)

    def edit(conf: ServiceConfig) -> None:
        cd = conf.services.get(sid)
        if cd is None:
            raise AdminError(f"no such resource '{sid}'", EXIT_NOT_FOUND)
        spec = RESOURCE_TYPES[cd.type]
        for key, value in options.items():
            try:
                if key == "state":
                    cd.state = normalize_state(value, "command line", None)
                elif key == "group":
                    cd.group = value
                elif key == "failback":
                    cd.failback = parse_bool(value, key, "command line", None)
                elif key == "max_restart":
                    cd.max_restart = parse_uint(value, key, "command line", None)
                elif key == "max_relocate":
                    cd.max_relocate = parse_uint(value, key, "command line", None)
                elif key == "comment":
                    cd.comment = value
                elif key in spec.extra:
                    cd.extra[key] = value
                else:
                    raise AdminError(f"unknown option '{key}' for {cd.type} resources", EXIT_USAGE)
            except ConfigError as e:
                raise AdminError(e.message, EXIT_USAGE) from None
        for key in delete:
            if key == "comment":
                cd.comment = None
            elif key == "group":
                cd.group = None
            elif key in spec.extra and not spec.extra[key]:
                cd.extra.pop(key, None)
            else:
                raise AdminError(f"cannot delete option '{key}'", EXIT_USAGE)

    _edit(store, edit, digest)


def remove(store: Store, sid: str) -> None:
    sid = normalize_sid(sid)

    def edit(conf: ServiceConfig) -> None:
        if sid not in conf.services:
            raise AdminError(f"no such resource '{sid}'", EXIT_NOT_FOUND)
        del conf.services[sid]

    _edit(store, edit)
    store.delete(rec.location_name(sid))


def crm_command(store: Store, line: str, nodes: list[str]) -> None:
    """Validate and queue one crm command line (§5.6 grammar)."""
    cmd = parse_crm_command(line)
    if cmd is None:
        raise AdminError(f"invalid crm command '{line}'", EXIT_USAGE)
    if cmd.sid is not None:
        conf, _ = read_config(store)
        if normalize_sid(cmd.sid) not in conf.services:
            raise AdminError(f"no such resource '{cmd.sid}'", EXIT_NOT_FOUND)
    if cmd.node is not None and cmd.node not in nodes:
        raise AdminError(f"unknown node '{cmd.node}' (nodes: {', '.join(nodes)})", EXIT_NOT_FOUND)
    if cmd.kind == "stop":
        assert cmd.arg is not None
        if not cmd.arg.isdigit():
            raise AdminError(f"timeout must be a number of seconds >= 0, got '{cmd.arg}'", EXIT_USAGE)
    rec.queue_crm_command(store, line)


def snapshot(store: Store, nodes: list[str]) -> Snapshot:
    ms, _ = rec.read_manager_status(store)
    conf, digest = read_config(store)
    lrm: dict[str, LrmStatus | None] = {}
    for n in sorted(set(nodes) | set(ms.node_status)):
        st = rec.read_lrm_status(store, n)
        lrm[n] = None if st.state is None else st
    return Snapshot(ms, lrm, conf, digest)
