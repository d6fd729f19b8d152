"""The bus's exception tree.

Everything the bus raises on purpose derives from :class:`BusError`, so callers
(actors, the CLI) can catch one type and turn it into one clear line.
"""

from __future__ import annotations


class BusError(Exception):
    """Base class of every error raised by :mod:`bus`."""


class ConfigError(BusError):
    """Bad construction parameters (membership, keys, limits)."""


class KeyFileError(ConfigError):
    """A CURVE key file is missing, malformed or has unsafe permissions."""


class UnknownPeerError(BusError):
    """A send named a node that is not in the configured membership."""


class ProtocolError(BusError):
    """A frame failed validation; ``reason`` names the counter it is booked under."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
