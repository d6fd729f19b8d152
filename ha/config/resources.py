"""resources.cfg: the HA resources and their requested state (BEHAVIOUR.md §7.1).

A registry of resource types says which ids a type accepts and which extra
properties it has; ``vm``/``ct`` are the reference's, ``fa`` is the
simulator's failing resource (§9.6), ``proc`` and ``ocf`` are ours (agents/).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from ha.config import schema
from ha.config.schema import MAX_VALUE_LEN, Prop, parse_sid
from ha.config.sectionconfig import digest_of, parse_sections
from ha.constants import DEFAULT_MAX_RELOCATE, DEFAULT_MAX_RESTART
from ha.errors import ConfigError
from ha.states import RequestedState

MAX_COMMENT = MAX_VALUE_LEN

__all__ = ["RESOURCE_TYPES", "ResourceType", "parse_sid"]


@dataclass(frozen=True, slots=True)
class ResourceType:
    """What the registry knows about one resource type (derived from ``schema.RESOURCES``)."""

    name: str
    id_pattern: re.Pattern[str]
    # extra properties of this type: name -> required?
    extra: dict[str, bool] = field(default_factory=dict)
    # migration keeps the service running (live) for this type
    live_migration: bool = False


def _registry() -> dict[str, ResourceType]:
    s = schema.RESOURCES
    return {
        t.name: ResourceType(
            t.name,
            t.id_pattern,
            {p.name: p.required for p in s.props_for(t.name) if p.extra},
            t.live_migration,
        )
        for t in s.section_types
    }


RESOURCE_TYPES: dict[str, ResourceType] = _registry()

STATE_VALUES = ("started", "stopped", "enabled", "disabled", "ignored")


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
    # the file had errors (a section, or bytes, that could not be read): a resource missing
    # here may still be configured; the Manager neither removes nor acts on one (issue #10)
    incomplete: bool = False
    # sid -> the node its section names ("" when none): where it goes when ``nodes`` (the
    # live ``locations`` record) no longer says otherwise (see ``relocate``)
    text_nodes: dict[str, str] = field(default_factory=dict)
    # sections refused only because neither the text nor ``nodes`` gave them a node
    nodeless: list[str] = field(default_factory=list)

    def __contains__(self, sid: object) -> bool:
        return sid in self.services

    def __iter__(self) -> Iterator[str]:
        return iter(self.services)

    def __len__(self) -> int:
        return len(self.services)

    def get(self, sid: str) -> ResourceConfig | None:
        return self.services.get(sid)

    def copy(self) -> ServiceConfig:
        return ServiceConfig(
            {sid: cd.copy() for sid, cd in self.services.items()},
            self.digest,
            self.incomplete,
            dict(self.text_nodes),
            list(self.nodeless),
        )

    def relocate(self, before: Mapping[str, str], now: Mapping[str, str]) -> bool:
        """Follow a change of ``nodes`` (parsed with BEFORE, now NOW) without parsing again.

        The same result as a parse with NOW, or False (nothing changed) where only a new
        parse can tell: a section without a node of its own gains or loses one.
        """
        changed = [sid for sid in before.keys() | now.keys() if before.get(sid) != now.get(sid)]
        nodeless = set(self.nodeless)
        for sid in changed:
            if sid in nodeless or (sid in self.services and not (now.get(sid) or self.text_nodes.get(sid))):
                return False
        for sid in changed:
            cd = self.services.get(sid)
            if cd is not None:
                cd.node = now.get(sid) or self.text_nodes.get(sid, "")
        return True


def normalize_state(value: str, path: str, line: int | None) -> str:
    """'enabled' is a legacy alias of 'started' (§7.1)."""
    prop = schema.RESOURCES.prop("state")
    assert prop is not None
    return str(prop.parse(value, path, line))


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
            cd = _resource_from_props(sid, dict(sec.props), path, sec.line, sec.prop_lines, from_file=True)
            conf.text_nodes[sid] = cd.node
            if nodes is not None and sid in nodes:
                cd.node = nodes[sid]
            if not cd.node:
                conf.nodeless.append(sid)
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
    from_file: bool = False,
) -> ResourceConfig:
    try:
        rtype, name = parse_sid(sid)
    except ConfigError as e:
        raise ConfigError(e.message, path, line) from None
    rs = schema.RESOURCES
    pl = prop_lines or {}

    def lno(key: str) -> int:
        return pl.get(key, line)

    def value(prop: Prop, raw: object) -> object:
        if from_file and isinstance(raw, str):
            return prop.read(raw, path, lno(prop.name))
        return prop.parse(raw, path, lno(prop.name))

    cd = ResourceConfig(sid=sid, type=rtype, name=name, node="", state=default_state)
    node = props.pop("node", "")
    if node:
        node_prop = rs.prop("node")
        assert node_prop is not None
        cd.node = str(value(node_prop, node))
    for key, raw in props.items():
        prop = rs.prop(key, rtype)
        if prop is None:
            raise ConfigError(f"resource '{sid}': unknown property '{key}'", path, lno(key))
        rs.assign(cd, prop, value(prop, raw))
    for prop in rs.props_for(rtype):
        # the node may come from elsewhere (``nodes``), checked by the caller
        if prop.required and prop.name != "node" and rs.get(cd, prop) is None:
            raise ConfigError(f"resource '{sid}': missing required property '{prop.name}'", path, line)
    return cd


def resource_from_dict(
    sid: str, props: dict[str, object], path: str, *, default_state: str = RequestedState.STARTED
) -> ResourceConfig:
    """Build one resource from a JSON-like mapping (simulator service_config, API)."""
    return _resource_from_props(sid, dict(props), path, 0, default_state=default_state)


def format_resources_cfg(conf: ServiceConfig) -> str:
    """Write resources.cfg: tab indent, comment first, then sorted keys, blank line after each.

    The reference derives a guest's node from where its config lives; our
    records have no such side channel, so the node is always written.
    """
    out: list[str] = []
    for sid in sorted(conf.services):
        cd = conf.services[sid]
        out.append(f"{cd.type}: {cd.name}")
        out.extend(schema.RESOURCES.render_props(cd, cd.type, cd.extra))
        out.append("")
    return "\n".join(out) + ("\n" if out else "")
