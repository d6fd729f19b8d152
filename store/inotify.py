"""Wake up when a directory changes (Linux inotify, through ctypes): the dir store's change journal.

The node's store watcher used to poll the journal 50 times a second. With a
:class:`DirWatch` on the store's ``.pyha`` directory (``DirStore.watch()``) it
sleeps until a record is written (every write appends to ``.pyha/journal``; a
rotation renames a new journal into place) or its probe interval passed. Where
inotify is not available :meth:`DirWatch.open` answers None and the caller keeps
polling. (The etcd store's equivalent is ``store/etcd_watch.py``.)
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
from pathlib import Path
from typing import Final

IN_CLOSE_WRITE: Final = 0x008
IN_MOVED_TO: Final = 0x080
IN_DELETE_SELF: Final = 0x400
IN_MOVE_SELF: Final = 0x800
# a journal append ends with the close of the file written (IN_CLOSE_WRITE), a rotation
# renames a new journal into place (IN_MOVED_TO)
MASK: Final = IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF


class DirWatch:
    """An inotify descriptor watching one directory (changes of the files directly in it).

    A :class:`store.base.ChangeWatch`: always ``live`` (the kernel does not drop it).
    """

    live: Final = True
    # SAFETY: a subscriber still reads the store this often (a local file system loses no
    # inotify event, but a watch overflow or a missed rotation would otherwise go unseen)
    safety_poll: Final = 1.0

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    @classmethod
    def open(cls, path: Path) -> DirWatch | None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        except (OSError, AttributeError):
            return None
        if fd < 0:
            return None
        if int(libc.inotify_add_watch(fd, os.fsencode(path), MASK)) < 0:
            os.close(fd)
            return None
        return cls(fd)

    def wait(self, timeout: float) -> bool:
        """Sleep until something changed in the directory (True) or ``timeout`` s passed (False)."""
        if not self._poll.poll(max(0, int(timeout * 1000))):
            return False
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self.fd, 65536):  # drain: one wake-up for a burst of events
                pass
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
