"""Keep the last good version of what a config file no longer says clearly (issue #10).

When a config file has errors, the sections that fail to parse are missing from
the new reading. Taken at face value, a typo in one resource would take that
resource out of HA management, and a stray byte could do it to all of them.
Instead the runtime carries over, for every entry the previous reading had and
the new one lacks, the previous entry, for as long as the file has errors.
Once the file reads without error, the new reading is in force as it is (a
deliberate removal then takes effect).

SAFETY (liveness of what runs): a config the node cannot fully read never
removes a service from management; the cost is that a removal made in the same
edit as an error waits until the error is fixed.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def carry_over(new: MutableMapping[K, V], previous: Mapping[K, V] | None, has_errors: bool) -> list[K]:
    """Put into ``new`` the entries of ``previous`` it lacks (only when ``has_errors``); return their keys."""
    if not has_errors or previous is None:
        return []
    kept = [k for k in previous if k not in new]
    for k in kept:
        new[k] = previous[k]
    return kept
