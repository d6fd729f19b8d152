"""The bus's exception tree, a branch of the project's (``ha.errors.HaError``).

Everything the bus raises on purpose derives from :class:`BusError`, so callers
can catch the bus's errors alone, or every error of the stack as ``HaError``
and turn it into one clear line. :class:`ConfigError` and :class:`ProtocolError`
are also the core's ``ConfigError`` and ``ProtocolError``.
"""

from __future__ import annotations

from ha import errors


class BusError(errors.HaError):
    """Base class of every error raised by :mod:`bus`."""


class ConfigError(BusError, errors.ConfigError):
    """Bad construction parameters (membership, keys, limits)."""


class KeyFileError(ConfigError):
    """A CURVE key file is missing, malformed or has unsafe permissions."""


class UnknownPeerError(BusError):
    """A send named a node that is not in the configured membership."""


class ProtocolError(BusError, errors.ProtocolError):
    """A frame failed validation, or a message cannot be encoded; ``reason`` names the counter."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
