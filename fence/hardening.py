"""Keep a fencing process alive and on time under memory and CPU pressure.

``harden()`` is called once at start by ``ha-watchdog`` (and by nothing that
runs services): locked memory (no page-in on the firing path), exempt from
the OOM killer, and a real-time (or at least high) scheduling priority.
Each step may be refused by the host (no CAP_IPC_LOCK, no real-time budget
in a container); every outcome is reported so the log says what holds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

MCL_CURRENT = 1
MCL_FUTURE = 2
OOM_SCORE_ADJ_MIN = -1000
RT_PRIORITY = 10  # SCHED_RR; low among real-time tasks, above every normal one
NICE_FALLBACK = -20


def _mlockall() -> str:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        if libc.mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
            return f"mlockall failed: {os.strerror(ctypes.get_errno())}"
    except (OSError, AttributeError) as e:
        return f"mlockall unavailable: {e}"
    return "memory locked"


def _oom_exempt() -> str:
    try:
        with open("/proc/self/oom_score_adj", "w", encoding="ascii") as f:
            f.write(str(OOM_SCORE_ADJ_MIN))
    except OSError as e:
        return f"oom_score_adj not set: {e.strerror or e}"
    return f"oom_score_adj {OOM_SCORE_ADJ_MIN}"


def _priority() -> str:
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(RT_PRIORITY))
        return f"SCHED_RR priority {RT_PRIORITY}"
    except (OSError, AttributeError) as rt_error:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, NICE_FALLBACK)
        except OSError as e:
            return f"no real-time priority ({rt_error}), nice not raised ({e.strerror or e})"
        return f"no real-time priority ({rt_error}), nice {NICE_FALLBACK}"


def harden() -> list[str]:
    """Apply every protection this host allows; one line per protection saying what holds."""
    return [_mlockall(), _oom_exempt(), _priority()]
