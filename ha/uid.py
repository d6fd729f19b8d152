"""Request UIDs (BEHAVIOUR.md §4): opaque, unique, deterministic for a given history."""

from __future__ import annotations

import base64
import hashlib


class UidGenerator:
    """22-character base64 MD5 of (node, time, counter, state), like the reference's.

    No randomness: the simulator must be reproducible; node name and time
    keep UIDs of different masters apart.
    """

    def __init__(self, node: str) -> None:
        self._node = node
        self._counter = 0

    def new(self, state: str, now: float) -> str:
        self._counter += 1
        raw = f"{state}:{self._node}:{now}:{self._counter}".encode()
        return base64.b64encode(hashlib.md5(raw).digest()).decode().rstrip("=")
