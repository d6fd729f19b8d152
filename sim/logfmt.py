"""The reference simulator's log line format (BEHAVIOUR.md §9.8)."""

from __future__ import annotations


def format_line(level: str, time: int | float, ident: str, msg: str) -> str:
    """``%-5s %5d %12s: %s``; levels are cut to 4 characters, one trailing newline is chomped."""
    if msg.endswith("\n"):
        msg = msg[:-1]
    return f"{level[:4]:<5} {int(time):>5} {ident:>12}: {msg}\n"
