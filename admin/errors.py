"""Exit codes of the administrative tools and the error every refused operation carries.

One table for ``ha-manager``, ``ha-cluster`` and the node API (docs/CLI.md,
"Exit codes"; docs/API.md reports the same numbers as error ``code`` with a
``reason``). Standard library and ``ha.errors`` only: every CLI start-up
imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

from ha.errors import HaError


class ExitCode(IntEnum):
    """A tool's exit status; the API's error ``code`` (not a resource agent's exit code)."""

    OK = 0
    FAILED = 1  # internal error (a bug), or a command that did not succeed
    USAGE = 2  # bad usage or value
    NOT_FOUND = 3  # unknown resource, node, group or rule
    REFUSED = 4  # refused in the current state
    CONFLICT = 5  # concurrent change (digest)
    UNREACHABLE = 6  # no node answers, or none is quorate (writes)
    FORBIDDEN = 7  # a write with a read-only key, or a key the cluster does not accept
    INTERRUPTED = 130  # Ctrl-C


# the API's error ``reason`` for each code (docs/API.md)
REASONS: dict[int, str] = {
    ExitCode.FAILED: "internal",
    ExitCode.USAGE: "usage",
    ExitCode.NOT_FOUND: "not_found",
    ExitCode.REFUSED: "refused",
    ExitCode.CONFLICT: "conflict",
    ExitCode.UNREACHABLE: "unreachable",
    ExitCode.FORBIDDEN: "forbidden",
}


def one_line(text: str) -> str:
    """``text`` with every character that is not printable (line breaks, line separators,
    control characters) written as its escape: a message that quotes a user's value stays
    one line whatever the value held (issue #10)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class AdminError(HaError):
    """A refused operation: one-line ``message``, exit ``code``, optional detail lines."""

    def __init__(
        self,
        message: str,
        code: ExitCode = ExitCode.REFUSED,
        details: Sequence[str] = (),
        reason: str | None = None,
    ) -> None:
        super().__init__(one_line(message))
        self.code = code
        self.details = [one_line(d) for d in details]
        self.reason = reason or REASONS.get(code, "failed")
