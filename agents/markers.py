"""Reading the demo service's markers (agents/demo_service.py): when each copy ran, and overlaps.

See ``agents/demo_service.py`` for the format. A copy's interval runs from its
``start`` line to its last ``alive``/``stop`` line; a copy killed with SIGKILL
may have lived up to one alive period longer, so intervals are extended by
that much before checking overlaps (conservative: it can only add overlaps).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

ALIVE_SLACK_NS = 60_000_000  # the service writes alive every 50 ms


@dataclass
class Copy:
    sid: str
    node: str
    pid: int
    start: int
    end: int


def read_copies(marker_dir: Path) -> tuple[dict[str, list[Copy]], list[str]]:
    """Copies per sid, plus the raw ``overlap`` lines (a second copy found the lock held)."""
    copies: dict[str, list[Copy]] = {}
    overlaps: list[str] = []
    for f in sorted(marker_dir.glob("*.markers")):
        sid = f.stem.replace("_", ":", 1)
        by_pid: dict[tuple[str, int], Copy] = {}
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) != 4:
                continue
            kind, t, node, pid = parts[0], int(parts[1]), parts[2], int(parts[3])
            if kind == "overlap":
                overlaps.append(f"{sid}: {line}")
                continue
            key = (node, pid)
            c = by_pid.get(key)
            if c is None:
                by_pid[key] = Copy(sid, node, pid, t, t)
            else:
                c.start = min(c.start, t)
                c.end = max(c.end, t)
        copies[sid] = sorted(by_pid.values(), key=lambda c: c.start)
    return copies, overlaps


def find_overlaps(marker_dir: Path) -> list[str]:
    """Every moment two copies of one service may have run at once (empty = none)."""
    copies, problems = read_copies(marker_dir)
    for sid, cs in copies.items():
        for a, b in itertools.pairwise(cs):
            if b.start < a.end + ALIVE_SLACK_NS:
                problems.append(
                    f"{sid}: copy on {b.node} (pid {b.pid}) started while the copy on {a.node} (pid {a.pid}) "
                    f"may still run ({(a.end + ALIVE_SLACK_NS - b.start) / 1e6:.1f} ms)"
                )
    return problems
