"""resources.cfg: the HA resources and their requested state (BEHAVIOUR.md §7.1).

A registry of resource types says which ids a type accepts and which extra
properties it has; ``vm``/``ct`` are the reference's, ``fa`` is the
simulator's failing resource (§9.6), ``proc`` and ``ocf`` are ours (agents/).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from ha.config.sectionconfig import (
    NODE_NAME,
    digest_of,
    parse_bool,
    parse_sections,
    parse_uint,
)
from ha.constants import DEFAULT_MAX_RELOCATE, DEFAULT_MAX_RESTART
from ha.errors import ConfigError
from ha.states import RequestedState

MAX_COMMENT = 4096


@dataclass(frozen=True, slots=True)
class ResourceType:
    """What the registry knows about one resource type."""

    name: str
    id_pattern: re.Pattern[str]
    # extra properties of this type: name -> required?
    extra: dict[str, bool] = field(default_factory=dict)
    # migration keeps the service running (live) for this type
    live_migration: bool = False


RESOURCE_TYPES: dict[str, ResourceType] = {
    "vm": ResourceType("vm", re.compile(r"^[1-9][0-9]+$"), live_migration=True),
    "ct": ResourceType("ct", re.compile(r"^[1-9][0-9]+$")),
    "fa": ResourceType("fa", re.compile(r"^[0-9]+$")),
    "proc": ResourceType(
        "proc",
        re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$"),
        extra={
            "cmd": True,
            "check_tcp": False,
            "check_cmd": False,
            "stop_timeout": False,
            "cwd": False,
            "env": False,
        },
    ),
    "ocf": ResourceType(
        "ocf",
        re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$"),
        extra={"agent": True, "params": False, "monitor_timeout": False},
    ),
}

_SID = re.compile(r"^([a-z]+):(\S+)$")

STATE_VALUES = ("started", "stopped", "enabled", "disabled", "ignored")


def parse_sid(sid: str, types: dict[str, ResourceType] | None = None) -> tuple[str, str]:
    """Split ``type:name`` and validate against the registry."""
    types = RESOURCE_TYPES if types is None else types
    m = _SID.match(sid)
    if not m:
        raise ConfigError(f"invalid resource id '{sid}' (expected TYPE:NAME)")
    rtype, name = m.group(1), m.group(2)
    spec = types.get(rtype)
    if spec is None:
        raise ConfigError(f"unknown resource type '{rtype}' in '{sid}' (known: {', '.join(sorted(types))})")
    if not spec.id_pattern.match(name):
        raise ConfigError(f"invalid name '{name}' for resource type '{rtype}'")
    return rtype, name


@dataclass(slots=True)
class ResourceConfig:
    """One configured resource (*cd*), with defaults filled in."""

    sid: str
    type: str
    name: str
    node: str
    state: str = RequestedState.STARTED
    group: str | None = None
    failback: bool = True
    max_restart: int = DEFAULT_MAX_RESTART
    max_relocate: int = DEFAULT_MAX_RELOCATE
    comment: str | None = None
    lock: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def copy(self) -> ResourceConfig:
        return ResourceConfig(
            self.sid,
            self.type,
            self.name,
            self.node,
            self.state,
            self.group,
            self.failback,
            self.max_restart,
            self.max_relocate,
            self.comment,
            self.lock,
            dict(self.extra),
        )


@dataclass(slots=True)
class ServiceConfig:
    """All configured resources keyed by sid, plus the digest of what was read."""

    services: dict[str, ResourceConfig] = field(default_factory=dict)
    digest: str | None = None

    def __contains__(self, sid: object) -> bool:
        return sid in self.services

    def __iter__(self) -> Iterator[str]:
        return iter(self.services)

    def __len__(self) -> int:
        return len(self.services)

    def get(self, sid: str) -> ResourceConfig | None:
        return self.services.get(sid)

    def copy(self) -> ServiceConfig:
        return ServiceConfig({sid: cd.copy() for sid, cd in self.services.items()}, self.digest)


def normalize_state(value: str, path: str, line: int | None) -> str:
    v = value.strip()
    if v not in STATE_VALUES:
        raise ConfigError(
            f"property 'state': invalid value '{value}' (one of {', '.join(STATE_VALUES)})", path, line
        )
    # 'enabled' is a legacy alias of 'started' (§7.1)
    return RequestedState.STARTED if v == "enabled" else v


def parse_resources_cfg(
    text: str, path: str = "resources.cfg", nodes: dict[str, str] | None = None
) -> tuple[ServiceConfig, list[ConfigError]]:
    """Parse resources.cfg text.

    ``nodes`` maps sid -> current node (the reference derives it from where
    the guest lives); our own types carry a ``node`` property instead.
    Returns the valid resources and the errors of the skipped ones.
    """
    sections, errors = parse_sections(text, path)
    conf = ServiceConfig(digest=digest_of(text))
    for sec in sections:
        sid = f"{sec.type}:{sec.id}"
        try:
            cd = _resource_from_props(sid, dict(sec.props), path, sec.line, sec.prop_lines)
            if nodes is not None and sid in nodes:
                cd.node = nodes[sid]
            if not cd.node:
                raise ConfigError(f"resource '{sid}' has no node", path, sec.line)
            if sid in conf.services:
                raise ConfigError(f"duplicate resource '{sid}'", path, sec.line)
            conf.services[sid] = cd
        except ConfigError as e:
            errors.append(e)
    return conf, errors


def _resource_from_props(
    sid: str,
    props: dict[str, object],
    path: str,
    line: int,
    prop_lines: dict[str, int] | None = None,
    *,
    default_state: str = RequestedState.STARTED,
) -> ResourceConfig:
    try:
        rtype, name = parse_sid(sid)
    except ConfigError as e:
        raise ConfigError(e.message, path, line) from None
    spec = RESOURCE_TYPES[rtype]
    pl = prop_lines or {}

    def lno(key: str) -> int:
        return pl.get(key, line)

    node = props.pop("node", "")
    if node and not NODE_NAME.match(str(node)):
        raise ConfigError(f"property 'node': invalid node name '{node}'", path, lno("node"))
    cd = ResourceConfig(sid=sid, type=rtype, name=name, node=str(node or ""), state=default_state)
    for key, value in props.items():
        sval = str(value)
        if key == "state":
            cd.state = normalize_state(sval, path, lno(key))
        elif key == "group":
            cd.group = sval
        elif key == "failback":
            cd.failback = parse_bool(sval, key, path, lno(key)) if not isinstance(value, int) else bool(value)
        elif key == "max_restart":
            cd.max_restart = parse_uint(value, key, path, lno(key))
        elif key == "max_relocate":
            cd.max_relocate = parse_uint(value, key, path, lno(key))
        elif key == "comment":
            if len(sval) > MAX_COMMENT:
                raise ConfigError(f"property 'comment': longer than {MAX_COMMENT} characters", path, lno(key))
            cd.comment = sval
        elif key == "lock":
            cd.lock = sval
        elif key in spec.extra:
            cd.extra[key] = sval
        else:
            raise ConfigError(f"resource '{sid}': unknown property '{key}'", path, lno(key))
    for key, required in spec.extra.items():
        if required and key not in cd.extra:
            raise ConfigError(f"resource '{sid}': missing required property '{key}'", path, line)
    return cd


def resource_from_dict(
    sid: str, props: dict[str, object], path: str, *, default_state: str = RequestedState.STARTED
) -> ResourceConfig:
    """Build one resource from a JSON-like mapping (simulator service_config, API)."""
    return _resource_from_props(sid, dict(props), path, 0, default_state=default_state)


def format_resources_cfg(conf: ServiceConfig) -> str:
    """Write resources.cfg: tab indent, comment first, then sorted keys, blank line after each."""
    out: list[str] = []
    for sid in sorted(conf.services):
        cd = conf.services[sid]
        out.append(f"{cd.type}: {cd.name}")
        if cd.comment is not None:
            out.append(f"\tcomment {cd.comment}")
        props: dict[str, str] = {}
        # The reference derives a guest's node from where its config lives; our
        # records have no such side channel, so the node is always written.
        props["node"] = cd.node
        if cd.state != RequestedState.STARTED:
            props["state"] = cd.state
        if cd.group is not None:
            props["group"] = cd.group
        if not cd.failback:
            props["failback"] = "0"
        if cd.max_restart != DEFAULT_MAX_RESTART:
            props["max_restart"] = str(cd.max_restart)
        if cd.max_relocate != DEFAULT_MAX_RELOCATE:
            props["max_relocate"] = str(cd.max_relocate)
        if cd.lock is not None:
            props["lock"] = cd.lock
        props.update(cd.extra)
        out.extend(f"\t{k} {v}" for k, v in sorted(props.items()))
        out.append("")
    return "\n".join(out) + ("\n" if out else "")
