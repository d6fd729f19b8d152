"""The ``crm_commands`` queue grammar (BEHAVIOUR.md §5.6, §7.7)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("move", re.compile(r"^(migrate|relocate)\s+(\S+)\s+(\S+)$")),
    ("stop", re.compile(r"^stop\s+(\S+)\s+(\S+)$")),
    ("enable-node-maintenance", re.compile(r"^enable-node-maintenance\s+(\S+)$")),
    ("disable-node-maintenance", re.compile(r"^disable-node-maintenance\s+(\S+)$")),
    ("disarm-ha", re.compile(r"^disarm-ha\s+(freeze|ignore)$")),
    ("arm-ha", re.compile(r"^arm-ha$")),
]


@dataclass(frozen=True, slots=True)
class CrmCommand:
    """One parsed line. ``kind`` is migrate/relocate/stop/enable-node-maintenance/..."""

    kind: str
    line: str
    sid: str | None = None
    node: str | None = None
    arg: str | None = None


def parse_crm_command(line: str) -> CrmCommand | None:
    """Parse one line; ``None`` when it matches no command (the CRM logs it)."""
    for kind, pat in _PATTERNS:
        m = pat.match(line)
        if not m:
            continue
        if kind == "move":
            return CrmCommand(m.group(1), line, sid=m.group(2), node=m.group(3))
        if kind == "stop":
            return CrmCommand("stop", line, sid=m.group(1), arg=m.group(2))
        if kind in ("enable-node-maintenance", "disable-node-maintenance"):
            return CrmCommand(kind, line, node=m.group(1))
        if kind == "disarm-ha":
            return CrmCommand(kind, line, arg=m.group(1))
        return CrmCommand(kind, line)
    return None


def format_move(task: str, sid: str, node: str) -> str:
    return f"{task} {sid} {node}"


def format_stop(sid: str, timeout: int) -> str:
    return f"stop {sid} {timeout}"
