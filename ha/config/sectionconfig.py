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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ha.config.encoding import decode_config
from ha.config.schema import (
    CONFIG_ID,
    NODE_NAME,
    format_node_list,
    parse_bool,
    parse_node_list,
    parse_uint,
)
from ha.errors import ConfigError

C = TypeVar("C")

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
        if line.startswith("#") or (current is not None and line.lstrip().startswith("#")):
            continue  # an indented comment inside a section too, as the reference's parser
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


# -- edits that keep what they do not understand (issue #10) -----------------------------------


@dataclass(slots=True)
class Chunk:
    """A piece of a section-config file: one section (``key`` = ``type:id``) or anything else."""

    key: str | None
    text: str
    line: int


def split_chunks(text: str) -> list[Chunk]:
    """Cut ``text`` into sections and the rest, exactly as :func:`parse_sections` sees it.

    A section runs from its header to the blank line that ends it (included);
    comment lines inside belong to it. Joining the chunks gives ``text`` back.
    """
    chunks: list[Chunk] = []
    current: Chunk | None = None
    for lineno, line in enumerate(text.split("\n"), start=1):
        raw = line + "\n"
        if current is not None:
            current.text += raw
            if not line.strip():
                current = None
            continue
        m = _HEADER.match(line) if line.strip() and not line.startswith("#") else None
        if m is None:
            if chunks and chunks[-1].key is None:
                chunks[-1].text += raw
            else:
                chunks.append(Chunk(None, raw, lineno))
            continue
        current = Chunk(f"{m.group(1).lower()}:{m.group(2)}", raw, lineno)
        chunks.append(current)
    # the loop added a "\n" after the last piece of the split, which the text does not have
    chunks[-1].text = chunks[-1].text[:-1]
    if not chunks[-1].text:
        chunks.pop()
    return chunks


class BrokenSectionError(ConfigError):
    """An edit would replace a section that does not parse (:func:`preserve_edit`)."""


def edit_config(
    data: bytes,
    name: str,
    parse: Callable[[str, str], tuple[C, list[ConfigError]]],
    fmt: Callable[[C], str],
    edit: Callable[[C], None],
) -> bytes:
    """Config file ``data`` after ``edit``: what the edit does not change is kept byte for byte.

    Comments, stray lines, sections that fail to parse and bytes that are not
    UTF-8 (read with ``surrogateescape``, written back unchanged) survive; the
    edit sees what parses (sections holding bad bytes left out, ``ha.config.encoding``).
    Raises :class:`BrokenSectionError` for an edit that would replace a section
    that does not parse, and whatever ``edit``/``fmt`` raise for a value the file
    cannot hold.
    """
    original = data.decode("utf-8", "surrogateescape")
    text, _ = decode_config(data, name)
    conf, _errors = parse(text, name)
    before = fmt(conf)
    edit(conf)
    return preserve_edit(original, before, fmt(conf), name).encode("utf-8", "surrogateescape")


def preserve_edit(original: str, before: str, after: str, path: str) -> str:
    """The file after an edit, keeping from ``original`` everything the edit did not change.

    ``before`` and ``after`` are the writer's rendering of what was parsed
    from ``original``, before and after the edit. Comments, stray lines,
    sections that failed to parse and sections the edit left alone are
    kept byte for byte; changed sections are re-rendered in place, deleted
    ones dropped, new ones appended. An edit that would replace a section
    which failed to parse is refused (:class:`ConfigError`).
    """
    if original == before:
        return after  # nothing to keep that the writer would not write the same way
    old = {c.key: c.text for c in split_chunks(before) if c.key is not None}
    new = {c.key: c.text for c in split_chunks(after) if c.key is not None}
    out: list[str] = []
    seen: set[str] = set()
    for c in split_chunks(original):
        if c.key is None or c.key in seen or c.key not in old:  # not a section, or one that did not parse
            if c.key is not None and c.key not in seen and c.key in new:
                raise BrokenSectionError(
                    f"section '{c.key}' is invalid: fix or remove it first", path, c.line
                )
            out.append(c.text)
            if c.key is not None:
                seen.add(c.key)
            continue
        seen.add(c.key)
        if c.key in new:
            out.append(c.text if old[c.key] == new[c.key] else _keep_comments(c.text, new[c.key]))
    text = "".join(out)
    added = [t for k, t in new.items() if k not in seen]
    if added:
        if text and not text.endswith("\n\n"):
            text += "\n" if text.endswith("\n") else "\n\n"
        text += "".join(added)
    return text


def _keep_comments(original: str, rendered: str) -> str:
    """``rendered`` with the comment lines of the ``original`` section kept, after its header."""
    comments = [ln + "\n" for ln in original.split("\n")[1:] if ln.lstrip().startswith("#")]
    if not comments:
        return rendered
    header, _, rest = rendered.partition("\n")
    return header + "\n" + "".join(comments) + rest
