"""A config file as in force on one reader: re-read on a new version, never broken by its content.

Bytes that are not UTF-8 and sections that fail to parse are config errors
(``ha.config.encoding``), not exceptions. While a file has errors, what the
last reading had and this one lacks is carried over (``ha.config.lastgood``);
a file read as one value (``datacenter.cfg``) keeps its last good value. The
live Env (``actors/env.py``) keeps one :class:`InForce` per file and logs what
a :class:`Reading` reports; pure, like the rest of ``ha/``.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ha.config.encoding import decode_config
from ha.config.lastgood import carry_over
from ha.errors import ConfigError

T = TypeVar("T")

WHOLE_FILE = "the whole file"


@dataclass
class Reading(Generic[T]):
    """What one read returned: the value in force and, when parsed now, what it found."""

    value: T
    fresh: bool  # parsed by this read (False: the file did not change since the last one)
    errors: list[ConfigError] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # entries carried over ([WHOLE_FILE] for one value)


class InForce(Generic[T]):
    """One reader's view of config file ``name``.

    ``entries`` gives the mapping of a value whose entries are carried over one
    by one (resources, groups, rules); None: the value counts as a whole.
    """

    def __init__(self, name: str, entries: Callable[[T], MutableMapping[str, Any]] | None) -> None:
        self.name = name
        self.entries = entries
        self._key: str | None = None
        self._value: T | None = None
        self.kept: list[str] = []

    def accept(self, value: T) -> None:
        """``value`` was read another way (the simulator's config objects): the last good reading."""
        self._key, self._value, self.kept = None, value, []

    def read(
        self,
        data: bytes | None,
        version: str | None,
        parse: Callable[[str, str | None], tuple[T, list[ConfigError]]],
        key_extra: str = "",
    ) -> Reading[T]:
        """The value in force for the file's current ``data`` (None: the file does not exist)."""
        key = f"{version}|{key_extra}"
        if self._key == key and self._value is not None:
            return Reading(self._value, fresh=False)
        text, errors = decode_config(data or b"", self.name)
        value, parse_errors = parse(text, version)
        errors += parse_errors
        kept: list[str] = []
        previous = self._value
        if errors and previous is not None:
            if self.entries is None:
                value, kept = previous, [WHOLE_FILE]
            else:
                kept = carry_over(self.entries(value), self.entries(previous), True)
        self._key, self._value, self.kept = key, value, kept
        return Reading(value, fresh=True, errors=errors, kept=kept)
