"""The reference simulator's log line format (BEHAVIOUR.md §9.8)."""

from __future__ import annotations


def format_line(level: str, time: int | float, ident: str, msg: str, *, full_level: bool = False) -> str:
    """``%-5s %5d %12s: %s``; one trailing newline is chomped.

    Daemon levels are cut to 4 characters; hardware lines keep the full level
    (``full_level``, §9.8: ``warning`` for the overcommit warnings).
    """
    if msg.endswith("\n"):
        msg = msg[:-1]
    lvl = level if full_level else level[:4]
    return f"{lvl:<5} {int(time):>5} {ident:>12}: {msg}\n"
