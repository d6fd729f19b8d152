"""Suspend-aware time for every deadline that fencing relies on.

CLOCK_MONOTONIC stops while the host is suspended: a node that resumes would
believe its lease and its watchdog deadline were still ahead of it while the
rest of the cluster already took the lease over. CLOCK_BOOTTIME is the same
clock but keeps counting through a suspend, so a resumed node sees at once
that its deadlines passed (the watchdog fires, renewals are refused).
"""

from __future__ import annotations

import time


def boottime() -> float:
    """Seconds on CLOCK_BOOTTIME (monotonic, counts suspended time, one clock per host)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)
