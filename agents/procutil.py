"""Process, process-group and cgroup v2 helpers for the real resource agents (Linux only).

Reading ``/proc`` and cgroups lives in :mod:`fence.procfs` (the watchdog needs it
too, with nothing but the standard library); it is re-exported here.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from fence.procfs import (
    ProcStat,
    cgroup2_mount,
    cgroup_procs,
    is_cgroup_dir,
    pgroup_members,
    pid_alive,
    read_boot_id,
    read_stat,
)

__all__ = [
    "ProcStat",
    "cgroup2_mount",
    "cgroup_kill",
    "cgroup_populated",
    "cgroup_procs",
    "fencing_env",
    "is_cgroup_dir",
    "kill_group",
    "parse_assignments",
    "pgroup_members",
    "pid_alive",
    "poll_until",
    "read_boot_id",
    "read_stat",
    "remove_cgroup",
    "resolve_cgroup_base",
    "run_bounded",
]


def resolve_cgroup_base(cgroup_base: str | Path | None) -> Path | None:
    """An agent's ``cgroup_base`` argument: "auto" = ``<cgroup2 mount>/pyha``; None = no cgroups."""
    if cgroup_base == "auto":
        mount = cgroup2_mount()
        return mount / "pyha" if mount is not None else None
    return Path(cgroup_base) if cgroup_base is not None else None


def fencing_env(env: object, sid: str) -> dict[str, str]:
    """``HA_FENCING_TOKEN`` for a start of ``sid`` where the environment has one (docs/AGENTS.md).

    The live runtime's Env answers ``fencing_token(sid)``: a number that grows with
    every move of the service, so a service writing to shared storage can reject
    a writer holding a smaller token (a copy that was fenced but still runs).
    """
    get = getattr(env, "fencing_token", None)
    return {"HA_FENCING_TOKEN": str(get(sid))} if callable(get) else {}


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def service_env(env: object, sid: str, node: str, extra: dict[str, str]) -> dict[str, str]:
    """The whole environment of a service's processes, built from scratch (docs/AGENTS.md).

    Nothing of the environment of whoever started ``ha-node`` leaks in (issue
    #10) except ``PATH`` and the ``PYHA_*`` variables (test harnesses mark
    their processes that way): ``PATH``, ``HOME=/``, ``LANG=C.UTF-8``,
    ``PYHA_CLUSTER`` (where the Env knows it), ``PYHA_NODE``, ``PYHA_SID``,
    ``HA_FENCING_TOKEN``, then the service's own ``env`` pairs.
    """
    out = {k: v for k, v in os.environ.items() if k.startswith("PYHA_")}
    out.update({"PATH": os.environ.get("PATH") or DEFAULT_PATH, "HOME": "/", "LANG": "C.UTF-8"})
    cluster = getattr(env, "cluster_name", None)
    if callable(cluster):
        out["PYHA_CLUSTER"] = str(cluster())
    out.update({"PYHA_NODE": node, "PYHA_SID": sid})
    out.update(fencing_env(env, sid))
    out.update(extra)
    return out


def cgroup_kill(path: Path) -> bool:
    """SIGKILL every process of the cgroup at once (Linux >= 5.14); False if unsupported."""
    try:
        with open(path / "cgroup.kill", "w", encoding="ascii") as f:
            f.write("1")
        return True
    except OSError:
        return False


def cgroup_populated(path: Path) -> bool | None:
    """``populated`` of the cgroup's ``cgroup.events``: does a live process run in it or below?

    One small read, whatever the number of processes on the host. The kernel takes a
    process out of this count when it exits (before it is a zombie). None when the
    file cannot be read (no such cgroup, not cgroup v2).
    """
    try:
        with open(path / "cgroup.events", encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "populated":
                    return value.strip() == "1"
    except (OSError, ValueError):
        return None
    return None


def remove_cgroup(path: Path) -> bool:
    """rmdir the cgroup (and empty children); False while it still has processes."""
    if not path.is_dir():
        return True
    ok = True
    for child in path.iterdir():
        if child.is_dir():
            ok = remove_cgroup(child) and ok
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return ok


# -- bounded subprocesses -----------------------------------------------------------------------


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def run_bounded(
    argv: Sequence[str],
    timeout: float,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    output: IO[bytes] | int | None = subprocess.DEVNULL,
) -> int | None:
    """Run a command in its own process group; its exit code, or None after a timeout.

    On timeout the whole process group is SIGKILLed and reaped: a hung helper
    never outlives its budget. Output goes to ``output`` (a file, not a pipe:
    a daemon that inherits a pipe would keep us waiting for EOF).
    """
    proc = subprocess.Popen(
        list(argv),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT if output is not subprocess.DEVNULL else subprocess.DEVNULL,
        start_new_session=True,
        umask=0o022,  # agents and checks: as a login shell would (ha-node runs with 077, admin/private.py)
    )
    try:
        return proc.wait(timeout=max(0.0, timeout))
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        proc.wait()
        return None
    finally:
        if proc.poll() is None:  # interrupted: never leave it behind
            kill_group(proc.pid)
            proc.wait()


def poll_until(check: Callable[[], object], timeout: float, first: float = 0.01, cap: float = 0.1) -> bool:
    """Call ``check()`` with growing pauses until it is truthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    pause = first
    while True:
        if check():
            return True
        now = time.monotonic()
        if now >= deadline:
            return bool(check())
        time.sleep(min(pause, deadline - now))
        pause = min(pause * 2, cap)


_ASSIGNMENT_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_assignments(value: str | None, prop: str, form: str) -> dict[str, str]:
    """Parse ``KEY=VALUE KEY2='with space'`` (shell quoting) into a dict.

    Raises ValueError naming the property and the offending word; ``form`` is
    how the message spells the expected shape (``KEY=VALUE`` or ``key=value``).
    """
    out: dict[str, str] = {}
    if not value:
        return out
    try:
        words = shlex.split(value)
    except ValueError as e:
        raise ValueError(f"property '{prop}': {e}") from None
    for w in words:
        key, eq, val = w.partition("=")
        if not eq or not _ASSIGNMENT_KEY.match(key):
            raise ValueError(f"property '{prop}': '{w}' is not {form}")
        out[key] = val
    return out
