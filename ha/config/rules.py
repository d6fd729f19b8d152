"""rules.cfg: HA rules (BEHAVIOUR.md §7.3, §5.13.1).

``node-affinity`` (nodes with priorities, strict) and ``resource-affinity``
(positive/negative); their properties are ``schema.RULES``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ha.config import schema
from ha.config.schema import NODE_AFFINITY, RESOURCE_AFFINITY
from ha.config.sectionconfig import digest_of, parse_sections
from ha.errors import ConfigError

__all__ = ["NODE_AFFINITY", "RESOURCE_AFFINITY", "RULE_TYPES", "Rule", "RulesConfig"]

RULE_TYPES = tuple(t.name for t in schema.RULES.section_types)


@dataclass(slots=True)
class Rule:
    id: str
    type: str
    resources: set[str]
    order: int
    nodes: dict[str, int] = field(default_factory=dict)
    strict: bool = False
    affinity: str | None = None  # positive | negative
    comment: str | None = None
    disable: bool = False

    def copy(self) -> Rule:
        return Rule(
            self.id,
            self.type,
            set(self.resources),
            self.order,
            dict(self.nodes),
            self.strict,
            self.affinity,
            self.comment,
            self.disable,
        )


@dataclass(slots=True)
class RulesConfig:
    rules: dict[str, Rule] = field(default_factory=dict)
    digest: str | None = None

    def copy(self) -> RulesConfig:
        return RulesConfig({k: r.copy() for k, r in self.rules.items()}, self.digest)

    def next_order(self) -> int:
        """The reference's helper: smallest existing order + 1 (a quirk, §5.13.3)."""
        return min((r.order for r in self.rules.values()), default=0) + 1


def parse_rules_cfg(text: str, path: str = "rules.cfg") -> tuple[RulesConfig, list[ConfigError]]:
    rs = schema.RULES
    sections, errors = parse_sections(text, path)
    conf = RulesConfig(digest=digest_of(text))
    order = 0
    for sec in sections:
        try:
            stype = rs.section_type(sec.type)
            if stype is None:
                raise ConfigError(f"unknown rule type '{sec.type}'", path, sec.line)
            if not stype.id_pattern.match(sec.id):
                raise ConfigError(f"invalid rule id '{sec.id}'", path, sec.line)
            if "resources" not in sec.props:
                raise ConfigError(f"rule '{sec.id}': missing required property 'resources'", path, sec.line)
            order += 1
            rule = Rule(sec.id, sec.type, set(), order)
            for key, value in sec.props.items():
                lno = sec.prop_lines[key]
                prop = rs.prop(key, sec.type)
                if prop is None:
                    raise ConfigError(
                        f"rule '{sec.id}': unknown property '{key}' for type {sec.type}", path, lno
                    )
                rs.assign(rule, prop, prop.read(value, path, lno))
            for prop in rs.props_for(sec.type):
                if prop.required and not rs.get(rule, prop):
                    raise ConfigError(
                        f"rule '{sec.id}': missing required property '{prop.name}'", path, sec.line
                    )
            if sec.id in conf.rules:
                raise ConfigError(f"duplicate rule '{sec.id}'", path, sec.line)
            conf.rules[sec.id] = rule
        except ConfigError as e:
            errors.append(e)
    return conf, errors


def format_rules_cfg(conf: RulesConfig) -> str:
    out: list[str] = []
    for rule in sorted(conf.rules.values(), key=lambda r: (r.order, r.id)):
        out.append(f"{rule.type}: {rule.id}")
        out.extend(schema.RULES.render_props(rule, rule.type))
        out.append("")
    return "\n".join(out) + ("\n" if out else "")
