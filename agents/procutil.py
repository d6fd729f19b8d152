"""Process, process-group and cgroup v2 helpers for the real resource agents (Linux only)."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    state: str  # R, S, D, Z, T, ...
    pgrp: int
    starttime: int  # clock ticks since boot

    @property
    def alive(self) -> bool:
        """Running, sleeping or stopped; a zombie (or dead) process is not alive."""
        return self.state not in ("Z", "X", "x")


def read_stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    try:
        rest = raw[raw.rindex(b")") + 2 :].split()
        # after "pid (comm) ": state ppid pgrp session tty tpgid flags minflt cminflt majflt
        # cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime
        return ProcStat(pid, rest[0].decode(), int(rest[2]), int(rest[19]))
    except (ValueError, IndexError):
        return None


def pgroup_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    out: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        st = read_stat(int(entry.name))
        if st is not None and st.pgrp == pgid and st.alive:
            out.append(st.pid)
    return out


def pid_alive(pid: int) -> bool:
    st = read_stat(pid)
    return st is not None and st.alive


# -- cgroup v2 --------------------------------------------------------------------------------


def cgroup2_mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or …/unified on hybrid hosts)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                pre, _, post = line.partition(" - ")
                if post.split(" ", 1)[0] == "cgroup2":
                    return Path(pre.split()[4])
    except OSError:
        return None
    return None


def is_cgroup_dir(path: Path) -> bool:
    """True when ``path`` is a directory of a cgroup v2 filesystem (the kernel made its files)."""
    return (path / "cgroup.procs").is_file() and (path / "cgroup.events").is_file()


def cgroup_procs(path: Path) -> list[int]:
    """Processes in the cgroup (the kernel lists no zombies); [] when it does not exist."""
    try:
        with open(path / "cgroup.procs", encoding="ascii") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []
    except OSError:
        return []


def cgroup_kill(path: Path) -> bool:
    """SIGKILL every process of the cgroup at once (Linux >= 5.14); False if unsupported."""
    try:
        with open(path / "cgroup.kill", "w", encoding="ascii") as f:
            f.write("1")
        return True
    except OSError:
        return False


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
