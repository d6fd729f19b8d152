"""Unix socket paths of any length (``sun_path`` holds 107 bytes and a NUL).

A cluster directory may be deep (a user's home, a test's temporary folder): its
``run/<node>/watchdog.sock`` can outgrow ``sun_path``, and bind/connect then fail
with "AF_UNIX path too long" (a suite run under pytest-xdist found it: every node
of a cluster failed to start). A long path is reached through an ``O_PATH``
descriptor of its directory, ``/proc/self/fd/N/NAME``: the same socket file, with
the directory's permissions still guarding it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

SUN_PATH_MAX = 107  # bytes, without the terminating NUL


@contextlib.contextmanager
def reachable(path: Path) -> Iterator[str]:
    """A name for the socket PATH that fits ``sun_path``, valid inside the ``with`` block
    (bind or connect there; the bound or connected socket outlives it)."""
    name = str(path)
    if len(os.fsencode(name)) <= SUN_PATH_MAX:
        yield name
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)
