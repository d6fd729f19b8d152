"""rules.cfg: HA rules (BEHAVIOUR.md §7.3, §5.13.1).

``node-affinity`` (nodes with priorities, strict) and ``resource-affinity``
(positive/negative). Other rule types can be added to ``RULE_TYPES``.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

from ha.config.resources import parse_sid
from ha.config.sectionconfig import (
    CONFIG_ID,
    digest_of,
    format_node_list,
    parse_bool,
    parse_node_list,
    parse_sections,
)
from ha.errors import ConfigError

NODE_AFFINITY = "node-affinity"
RESOURCE_AFFINITY = "resource-affinity"
RULE_TYPES = (NODE_AFFINITY, RESOURCE_AFFINITY)


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


def _parse_resources(value: str, path: str, line: int) -> set[str]:
    out: set[str] = set()
    for raw in value.split(","):
        item = raw.strip()
        if not item:
            continue
        if item.isdigit():  # bare VMID: the reference resolves the type; we assume vm
            item = f"vm:{item}"
        try:
            parse_sid(item)
        except ConfigError as e:
            raise ConfigError(f"property 'resources': {e.message}", path, line) from None
        out.add(item)
    if not out:
        raise ConfigError("property 'resources': empty resource list", path, line)
    return out


def parse_rules_cfg(text: str, path: str = "rules.cfg") -> tuple[RulesConfig, list[ConfigError]]:
    sections, errors = parse_sections(text, path)
    conf = RulesConfig(digest=digest_of(text))
    order = 0
    for sec in sections:
        try:
            if sec.type not in RULE_TYPES:
                raise ConfigError(f"unknown rule type '{sec.type}'", path, sec.line)
            if not CONFIG_ID.match(sec.id):
                raise ConfigError(f"invalid rule id '{sec.id}'", path, sec.line)
            props = sec.props
            if "resources" not in props:
                raise ConfigError(f"rule '{sec.id}': missing required property 'resources'", path, sec.line)
            order += 1
            rule = Rule(
                sec.id,
                sec.type,
                _parse_resources(props["resources"], path, sec.prop_lines["resources"]),
                order,
            )
            for key, value in props.items():
                lno = sec.prop_lines[key]
                if key == "resources":
                    continue
                if key == "comment":
                    rule.comment = urllib.parse.unquote(value)
                elif key == "disable":
                    # quirk (§5.13.1): any presence, even "disable 0", disables the rule
                    rule.disable = True
                elif key == "nodes" and rule.type == NODE_AFFINITY:
                    rule.nodes = parse_node_list(value, key, path, lno)
                elif key == "strict" and rule.type == NODE_AFFINITY:
                    rule.strict = parse_bool(value, key, path, lno)
                elif key == "affinity" and rule.type == RESOURCE_AFFINITY:
                    if value not in ("positive", "negative"):
                        raise ConfigError(
                            f"rule '{sec.id}': property 'affinity' must be positive or negative", path, lno
                        )
                    rule.affinity = value
                else:
                    raise ConfigError(
                        f"rule '{sec.id}': unknown property '{key}' for type {sec.type}", path, lno
                    )
            if rule.type == NODE_AFFINITY and not rule.nodes:
                raise ConfigError(f"rule '{sec.id}': missing required property 'nodes'", path, sec.line)
            if rule.type == RESOURCE_AFFINITY and rule.affinity is None:
                raise ConfigError(f"rule '{sec.id}': missing required property 'affinity'", path, sec.line)
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
        if rule.affinity is not None:
            out.append(f"\taffinity {rule.affinity}")
        if rule.comment is not None:
            out.append(f"\tcomment {urllib.parse.quote(rule.comment, safe=' ')}")
        if rule.disable:
            out.append("\tdisable 1")
        if rule.type == NODE_AFFINITY:
            out.append(f"\tnodes {format_node_list(rule.nodes)}")
        out.append(f"\tresources {','.join(sorted(rule.resources))}")
        if rule.type == NODE_AFFINITY and rule.strict:
            out.append("\tstrict 1")
        out.append("")
    return "\n".join(out) + ("\n" if out else "")
