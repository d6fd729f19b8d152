"""Start one service detached from its caller through ``/bin/sh`` (the vm agent's launcher, issue #12).

It does what ``agents/launcher.py`` does (its own session and process group,
its cgroup joined before the exec, stdin from /dev/null, stdout and stderr
appended to the log, the working directory, umask 022, exactly the given
environment but for what the shells add (``PWD``; ``SHLVL`` through ``bash``,
below); re-parented to init, as the shell exits at once) without starting a
Python interpreter: ``python -I -S launcher.py`` costs 20-30 ms before the
service's own exec, which a live migration's target pays before its QEMU can
listen. The shell costs about 1 ms.

The shell joins the cgroup first (so the service is in it from its first
instruction: fencing the node kills it, ``cgroup.kill``), then starts
``setsid SERVICE`` in the background and prints its pid: a background job of
a non-interactive shell is not a process-group leader, so ``setsid`` makes it
a session leader and execs the service in the same process (the pid printed
is the service's). :func:`spawn` returns ``{"pid", "starttime"}`` as the
launcher does, or ``{"error"}``.

The file table: ``spec["fd_table"] = N`` starts the service with room for N
descriptors. A process starts with a table of 64; the kernel grows it when a
descriptor past it is opened, and in a process with threads that growth waits
for an RCU grace period (``expand_files`` -> ``synchronize_rcu``: 10-17 ms
here). A QEMU whose guest came in by live migration opens its 70 virtio
eventfds in the ``cont`` that resumes the guest, so that wait sat in the
guest's pause and on the migration's path (measured with ``perf sched``:
QEMU's main thread in D state in ``eventfd2``). The service's process, still
a single thread, opens and closes descriptor N-1 before its exec (through
``bash``: ``dash`` has no descriptors past 9), which grows the table at no
cost; tables never shrink, and an exec keeps it. Without ``bash`` the service
starts with the default table.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Any, Final

SH: Final = "/bin/sh"
# grows the table in the service's own process (one thread, no RCU wait), then execs the service;
# the descriptor is closed again at once, and a failure (a low RLIMIT_NOFILE) only costs the growth
_GROW: Final = 'true 2>/dev/null {fd}</dev/null; exec "$@"'
# $1 cgroup ("" for none), $2 log, $3 working directory, then the command; fd 3 is the log
_SCRIPT: Final = """
cg=$1 log=$2 dir=$3
shift 3
if [ -n "$cg" ]; then echo $$ >"$cg/cgroup.procs" || exit 125; fi
exec 3>>"$log" || exit 125
cd "$dir" || exit 125
unset OLDPWD
umask 022
setsid "$@" </dev/null >&3 2>&3 3>&- &
echo $!
"""


def available() -> bool:
    """Can :func:`spawn` run here (a POSIX shell and util-linux ``setsid``)?"""
    return shutil.which("setsid") is not None and shutil.which(SH) is not None


def _stat(pid: int) -> tuple[int, int]:
    """(process group, start time in clock ticks since boot) from /proc/<pid>/stat (fields 5 and 22)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    fields = raw[raw.rindex(b")") + 2 :].split()
    return int(fields[2]), int(fields[19])


def spawn(spec: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Start ``spec`` (``argv``, ``cwd``, ``env``, ``cgroup``, ``log``: the launcher's spec)."""
    argv = [str(a) for a in spec["argv"]]
    if not argv or shutil.which(argv[0]) is None:
        return {"error": f"{argv[0] if argv else 'no command'}: not an executable"}
    env = {str(k): str(v) for k, v in spec["env"].items()}
    fd_table = int(spec.get("fd_table") or 0)
    if fd_table > 64 and (bash := shutil.which("bash")) is not None:
        argv = [bash, "-c", _GROW.format(fd=fd_table - 1), "bash", *argv]
    res = subprocess.run(
        [SH, "-c", _SCRIPT, "sh", str(spec.get("cgroup") or ""), str(spec["log"]), str(spec["cwd"]), *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        start_new_session=True,  # the shell leads its own group: its background job does not
    )
    if res.returncode != 0 or not res.stdout.strip().isdigit():
        return {"error": f"{res.stderr.strip() or 'the shell failed'} (exit {res.returncode})"}
    pid = int(res.stdout.strip())
    # the launcher returns once its child is a session leader; so does this (the shell printed the
    # pid right after its fork): a kill of the process group must reach the service from now on
    deadline = time.monotonic() + timeout
    while True:
        try:
            pgrp, start = _stat(pid)
        except (OSError, ValueError, IndexError):
            return {"pid": pid, "starttime": -1}  # already gone; the caller's liveness check will see it
        if pgrp == pid or time.monotonic() > deadline:
            return {"pid": pid, "starttime": start}
        time.sleep(0.0005)
