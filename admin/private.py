"""Private files (issue #11): what the cluster keeps on disk is for root (its owner) alone.

Every command sets the umask 077 at start (:func:`private_umask`), so what it
creates is 0600/0700; the cluster directory itself is made 0700 by
``ha-cluster init``. ``ha-node`` refuses to start when the cluster directory,
its store or its keys can be reached by other users (:func:`exposed`): a local
user who can open a lease file can block the lease (``flock`` works on a
read-only descriptor) and so get the node fenced; one who can read the store
reads every ``env=`` value; one who can read the keys joins the bus.

Services do not inherit the 077: the agents start them with umask 022
(``agents/launcher.py``, ``agents/procutil.run_bounded``), as a login shell would.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

PRIVATE_UMASK = 0o077


def private_umask() -> None:
    """Files and folders this process creates are its owner's alone."""
    os.umask(PRIVATE_UMASK)


def make_private(path: Path) -> None:
    """``chmod go-rwx`` of one folder (the cluster directory; what is inside it is then unreachable)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(mode & 0o700)


def exposed(paths: Iterable[Path]) -> str | None:
    """The first of ``paths`` other users can reach, as one line with the fix; None when all are private.

    A folder counts as private when neither group nor others may enter or read
    it (what is inside is then out of their reach, whatever its own mode);
    a missing path is skipped.
    """
    for p in paths:
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            return f"{p} can be reached by other users (mode {mode:04o}): chmod go-rwx {p}"
    return None
