"""Start one service detached from its caller (run as a script by ``agents/proc.py``).

``python -I -S launcher.py SPEC_JSON``: fork; the child becomes a session and
process-group leader (setsid), joins its cgroup when one is given, points
stdin at /dev/null and stdout/stderr at the log file, changes directory and
execs the command. The launcher prints ``{"pid": …, "starttime": …}`` and
exits, so the service is re-parented to init (or the nearest subreaper) and
survives a restart of the LRM that asked for it. A failure before exec is
reported through a close-on-exec pipe as ``{"error": …}`` with exit code 1.

Only the standard library; no project imports (it runs with ``-I -S``).
"""

from __future__ import annotations

import json
import os
import sys


def stat_starttime(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat: start time in clock ticks since boot."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    return int(raw[raw.rindex(b")") + 2 :].split()[19])


def child(spec: dict[str, object], err_w: int) -> None:
    try:
        os.setsid()
        cgroup = spec.get("cgroup")
        if isinstance(cgroup, str) and cgroup:
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        log = os.open(str(spec["log"]), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.chdir(str(spec["cwd"]))
        os.umask(0o022)  # the service's own files: as a login shell would (ha-node runs with 077)
        fd_table = spec.get("fd_table")
        if isinstance(fd_table, int) and fd_table > 64:  # room for this many descriptors (shspawn.py)
            try:
                os.dup2(devnull, fd_table - 1)
                os.close(fd_table - 1)
            except OSError:
                pass  # a low RLIMIT_NOFILE: the service starts with the default table
        argv = [str(a) for a in spec["argv"]]  # type: ignore[attr-defined]
        env = {str(k): str(v) for k, v in spec["env"].items()}  # type: ignore[attr-defined]
        os.execve(argv[0], argv, env)  # err_w is close-on-exec: EOF tells the launcher "exec'd"
    except BaseException as e:
        try:
            os.write(err_w, f"{type(e).__name__}: {e}".encode(errors="replace"))
        finally:
            os._exit(127)


def main() -> int:
    spec = json.loads(sys.argv[1])
    err_r, err_w = os.pipe()  # both close-on-exec
    pid = os.fork()
    if pid == 0:
        os.close(err_r)
        child(spec, err_w)
    os.close(err_w)
    chunks = []
    while True:
        b = os.read(err_r, 4096)
        if not b:
            break
        chunks.append(b)
    if chunks:
        os.waitpid(pid, 0)
        print(json.dumps({"error": b"".join(chunks).decode(errors="replace")}))
        return 1
    try:
        start = stat_starttime(pid)
    except (OSError, ValueError, IndexError):
        start = -1  # already gone; the caller's liveness check will see it
    print(json.dumps({"pid": pid, "starttime": start}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
