"""Error tree of the project (STYLE.md "Errors are a tree").

The CLI and the simulator turn these into one clear line and an exit code;
nothing shows a traceback to a user for bad input. The bus's errors
(``bus/errors.py``: ``BusError`` and below; its ``ConfigError`` and
``ProtocolError`` are also the ones here), the store's
(``store.base.StoreError``, ``VersionConflict``) and the administrative
tools' (``admin.errors.AdminError``) are branches of this tree.
"""

from __future__ import annotations


class HaError(Exception):
    """Base of every error the HA stack raises on purpose."""


class ConfigError(HaError):
    """A configuration file or record is malformed.

    ``path`` and ``line`` point at the offending input when they are known.
    """

    def __init__(self, message: str, path: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.path = path
        self.line = line
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path + (f":{self.line}" if self.line is not None else "") + ": "
        return where + self.message


class CfsError(HaError):
    """The shared store cannot be read or written right now (pmxcfs "not mounted")."""


class LockLost(HaError):
    """A lease/lock that the caller relied on is no longer held."""


class ProtocolError(HaError):
    """A message or record violates the protocol."""


class SimulationError(HaError):
    """The simulated world was asked to do something impossible (a fatal scenario error)."""
