"""Reader for Proxmox "section config" text (resources.cfg, groups.cfg, rules.cfg).

Format (§7.1): a header line ``{type}: {id}``, then property lines indented by
whitespace as ``key value``; a blank line ends a section; lines starting with
``#`` are comments. A malformed line or section is reported as a
:class:`ConfigError` naming file and line and is skipped; the other sections
are still read (a bad section never takes the others down silently: the
caller receives the error list and decides).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from ha.errors import ConfigError

_HEADER = re.compile(r"^(\S+):\s*(\S+)\s*$")
_PROPERTY = re.compile(r"^\s+(\S+)(?:\s+(.*\S))?\s*$")


@dataclass(slots=True)
class RawSection:
    """One section as read, before type-specific validation."""

    type: str
    id: str
    line: int
    props: dict[str, str] = field(default_factory=dict)
    # line number of each property, for error messages
    prop_lines: dict[str, int] = field(default_factory=dict)


def digest_of(text: str) -> str:
    """The digest the reference uses to detect concurrent edits (sha1 of the raw text)."""
    return hashlib.sha1(text.encode()).hexdigest()


def parse_sections(text: str, path: str) -> tuple[list[RawSection], list[ConfigError]]:
    """Split ``text`` into raw sections; collect (not raise) errors."""
    sections: list[RawSection] = []
    errors: list[ConfigError] = []
    current: RawSection | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.startswith("#"):
            continue
        if not line.strip():
            current = None
            continue
        if current is None:
            m = _HEADER.match(line)
            if not m:
                errors.append(ConfigError(f"ignore config line: {line.strip()}", path, lineno))
                continue
            current = RawSection(type=m.group(1).lower(), id=m.group(2), line=lineno)
            sections.append(current)
            continue
        m = _PROPERTY.match(line)
        if not m:
            errors.append(
                ConfigError(f"(section '{current.id}') ignore config line: {line.strip()}", path, lineno)
            )
            continue
        key, value = m.group(1), m.group(2) if m.group(2) is not None else ""
        if key in current.props:
            errors.append(ConfigError(f"(section '{current.id}') duplicate property '{key}'", path, lineno))
            continue
        current.props[key] = value
        current.prop_lines[key] = lineno
    return sections, errors


def parse_bool(value: str, key: str, path: str, line: int | None) -> bool:
    v = value.strip().lower()
    if v in ("1", "yes", "on", "true"):
        return True
    if v in ("0", "no", "off", "false"):
        return False
    raise ConfigError(f"property '{key}': invalid boolean value '{value}'", path, line)


def parse_uint(value: object, key: str, path: str, line: int | None) -> int:
    """Parse a non-negative integer given as int or numeric string (sim JSON allows both)."""
    if isinstance(value, bool):
        raise ConfigError(f"property '{key}': expected a non-negative integer, got '{value}'", path, line)
    if isinstance(value, int):
        n = value
    elif (isinstance(value, float) and value.is_integer()) or (
        isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value)
    ):
        n = int(value)
    else:
        raise ConfigError(f"property '{key}': expected a non-negative integer, got '{value}'", path, line)
    if n < 0:
        raise ConfigError(f"property '{key}': must be >= 0, got {n}", path, line)
    return n


NODE_NAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$")
CONFIG_ID = re.compile(r"^[a-zA-Z][a-zA-Z0-9_\-]+$")


def parse_node_list(value: str, key: str, path: str, line: int | None) -> dict[str, int]:
    """Parse ``node[:prio],node[:prio]`` into {node: priority} (priority default 0)."""
    nodes: dict[str, int] = {}
    for raw in value.split(","):
        item = raw.strip()
        if not item:
            continue
        name, _, prio = item.partition(":")
        if not NODE_NAME.match(name):
            raise ConfigError(f"property '{key}': invalid node name '{name}'", path, line)
        if prio:
            if not re.fullmatch(r"\d+", prio):
                raise ConfigError(
                    f"property '{key}': invalid priority '{prio}' for node '{name}'", path, line
                )
            nodes[name] = int(prio)
        else:
            nodes[name] = 0
    if not nodes:
        raise ConfigError(f"property '{key}': empty node list", path, line)
    return nodes


def format_node_list(nodes: dict[str, int]) -> str:
    """Sorted, with ``:prio`` only when non-zero (§7.3)."""
    return ",".join(f"{n}:{p}" if p else n for n, p in sorted(nodes.items()))
