"""groups.cfg: legacy HA groups (BEHAVIOUR.md §7.2, §5.14)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ha.config.sectionconfig import (
    CONFIG_ID,
    digest_of,
    format_node_list,
    parse_bool,
    parse_node_list,
    parse_sections,
)
from ha.errors import ConfigError


@dataclass(slots=True)
class Group:
    id: str
    nodes: dict[str, int]
    restricted: bool = False
    nofailback: bool = False
    comment: str | None = None


@dataclass(slots=True)
class GroupConfig:
    groups: dict[str, Group] = field(default_factory=dict)
    digest: str | None = None


def parse_groups_cfg(text: str, path: str = "groups.cfg") -> tuple[GroupConfig, list[ConfigError]]:
    sections, errors = parse_sections(text, path)
    conf = GroupConfig(digest=digest_of(text))
    for sec in sections:
        try:
            if sec.type != "group":
                raise ConfigError(f"unknown section type '{sec.type}'", path, sec.line)
            if not CONFIG_ID.match(sec.id):
                raise ConfigError(f"invalid group id '{sec.id}'", path, sec.line)
            props = sec.props
            if "nodes" not in props:
                raise ConfigError(f"group '{sec.id}': missing required property 'nodes'", path, sec.line)
            group = Group(sec.id, parse_node_list(props["nodes"], "nodes", path, sec.prop_lines["nodes"]))
            for key, value in props.items():
                lno = sec.prop_lines[key]
                if key == "nodes":
                    continue
                if key == "restricted":
                    group.restricted = parse_bool(value, key, path, lno)
                elif key == "nofailback":
                    group.nofailback = parse_bool(value, key, path, lno)
                elif key == "comment":
                    group.comment = value
                else:
                    raise ConfigError(f"group '{sec.id}': unknown property '{key}'", path, lno)
            if sec.id in conf.groups:
                raise ConfigError(f"duplicate group '{sec.id}'", path, sec.line)
            conf.groups[sec.id] = group
        except ConfigError as e:
            errors.append(e)
    return conf, errors


def format_groups_cfg(conf: GroupConfig) -> str:
    out: list[str] = []
    for gid in sorted(conf.groups):
        g = conf.groups[gid]
        out.append(f"group: {gid}")
        if g.comment is not None:
            out.append(f"\tcomment {g.comment}")
        out.append(f"\tnodes {format_node_list(g.nodes)}")
        if g.nofailback:
            out.append("\tnofailback 1")
        if g.restricted:
            out.append("\trestricted 1")
        out.append("")
    return "\n".join(out) + ("\n" if out else "")
