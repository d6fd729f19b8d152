"""How the etcd store keeps a record's bytes: compressed from ``COMPRESS_MIN`` on (issue #15).

A ``manager_status`` of 2,000 services is about 200 KB of JSON and 20-30 KB
compressed: written every round, copied to every etcd member, read by every
node after each change. :func:`pack` stores a record of ``COMPRESS_MIN`` bytes
or more zlib-compressed (level 1) behind the tag ``\x00z``, a smaller one as
it is unless it begins with a NUL byte (then behind ``\x00r``); text and JSON
never begin with NUL, so records written before read the same (docs/ETCD.md,
"Records").
"""

from __future__ import annotations

import zlib
from typing import Final

from store.base import Record, StoreError
from store.etcd_kv import Kv

# bytes from which a record is stored compressed (see the module doc)
COMPRESS_MIN: Final = 8 * 1024
_ZLIB: Final = b"\x00z"
_RAW: Final = b"\x00r"


def pack(data: bytes) -> bytes:
    """A record's bytes as stored: compressed from ``COMPRESS_MIN`` on, else as they are."""
    if len(data) >= COMPRESS_MIN:
        return _ZLIB + zlib.compress(data, 1)
    return _RAW + data if data[:1] == b"\x00" else data


def unpack(stored: bytes) -> bytes:
    """The record's bytes from what :func:`pack` stored (or a value written before it)."""
    if stored[:2] == _ZLIB:
        try:
            return zlib.decompress(stored[2:])
        except zlib.error as e:
            raise StoreError(f"etcd: a compressed record does not decompress: {e}") from None
    if stored[:2] == _RAW:
        return stored[2:]
    return stored


def record_of(kv: Kv) -> Record:
    """The record a key-value of ``records/`` holds: its bytes unpacked, its mod_revision as version."""
    return Record(unpack(kv.value), str(kv.mod))
