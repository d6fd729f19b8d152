"""groups.cfg: legacy HA groups (BEHAVIOUR.md §7.2, §5.14); the properties are ``schema.GROUPS``."""

from __future__ import annotations

from dataclasses import dataclass, field

from ha.config import schema
from ha.config.sectionconfig import digest_of, parse_sections
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
    gs = schema.GROUPS
    sections, errors = parse_sections(text, path)
    conf = GroupConfig(digest=digest_of(text))
    for sec in sections:
        try:
            stype = gs.section_type(sec.type)
            if stype is None:
                raise ConfigError(f"unknown section type '{sec.type}'", path, sec.line)
            if not stype.id_pattern.match(sec.id):
                raise ConfigError(f"invalid group id '{sec.id}'", path, sec.line)
            group = Group(sec.id, {})
            for req in gs.props_for(sec.type):
                if req.required and req.name not in sec.props:
                    raise ConfigError(
                        f"group '{sec.id}': missing required property '{req.name}'", path, sec.line
                    )
            for key, value in sec.props.items():
                lno = sec.prop_lines[key]
                prop = gs.prop(key, sec.type)
                if prop is None:
                    raise ConfigError(f"group '{sec.id}': unknown property '{key}'", path, lno)
                gs.assign(group, prop, prop.read(value, path, lno))
            if sec.id in conf.groups:
                raise ConfigError(f"duplicate group '{sec.id}'", path, sec.line)
            conf.groups[sec.id] = group
        except ConfigError as e:
            errors.append(e)
    return conf, errors


def format_groups_cfg(conf: GroupConfig) -> str:
    out: list[str] = []
    for gid in sorted(conf.groups):
        out.append(f"group: {gid}")
        out.extend(schema.GROUPS.render_props(conf.groups[gid], "group"))
        out.append("")
    return "\n".join(out) + ("\n" if out else "")
