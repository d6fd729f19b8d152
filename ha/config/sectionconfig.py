"""Reader for Proxmox "section config" text (resources.cfg, groups.cfg, rules.cfg).

Format (§7.1): a header line ``{type}: {id}``, then property lines indented by
whitespace as ``key value``; a blank line ends a section; lines starting with
``#`` are comments. Lines end at ``\n`` only (``str.splitlines`` would also
end them at U+2028, U+0085 and other separators a value must not hold). A
malformed line or section is reported as a :class:`ConfigError` naming file
and line and is skipped; the other sections are still read (a bad section
never takes the others down silently: the caller receives the error list
and decides).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from ha.config.schema import (
    CONFIG_ID,
    NODE_NAME,
    format_node_list,
    parse_bool,
    parse_node_list,
    parse_uint,
)
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
    # Lines end at "\n" only (a trailing "\r" is a blank): a line separator or control character
    # inside a value stays in the value, where the schema refuses it (issue #10).
    for lineno, line in enumerate(text.split("\n"), start=1):
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


# the value helpers live with the schema; re-exported for the simulator's JSON config
__all__ = [
    "CONFIG_ID", "NODE_NAME", "RawSection", "digest_of", "format_node_list", "parse_bool", "parse_node_list",
    "parse_sections", "parse_uint",
]  # fmt: skip
