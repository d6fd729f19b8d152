"""Reading processes and cgroups from ``/proc`` and cgroup v2 (Linux only, standard library only)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def read_boot_id() -> str:
    """The kernel's id of the current boot (changes at every reboot)."""
    try:
        with open(BOOT_ID_PATH, encoding="ascii") as f:
            return f.read().strip()
    except OSError:  # pragma: no cover - every Linux has it
        return "unknown-boot"


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    state: str  # R, S, D, Z, T, ...
    pgrp: int
    session: int
    starttime: int  # clock ticks since boot

    @property
    def alive(self) -> bool:
        """Running, sleeping or stopped; a zombie (or dead) process is not alive."""
        return self.state not in ("Z", "X", "x")

    @property
    def stopped(self) -> bool:
        """Stopped by a signal (SIGSTOP) or by a tracer."""
        return self.state in ("T", "t")


def read_stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    try:
        rest = raw[raw.rindex(b")") + 2 :].split()
        # after "pid (comm) ": state ppid pgrp session tty tpgid flags minflt cminflt majflt
        # cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime
        return ProcStat(pid, rest[0].decode(), int(rest[2]), int(rest[3]), int(rest[19]))
    except (ValueError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    st = read_stat(pid)
    return st is not None and st.alive


def read_pid_file(path: Path) -> int | None:
    """The pid written in ``path`` if that process is alive (a zombie is not), else None."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


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
    """Processes in the cgroup itself (the kernel lists no zombies); [] when it does not exist."""
    try:
        with open(path / "cgroup.procs", encoding="ascii") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def cgroup_tree_procs(path: Path) -> list[int]:
    """Processes in the cgroup and every cgroup below it."""
    out: list[int] = []
    try:
        for dirpath, _dirs, files in os.walk(path):
            if "cgroup.procs" in files:
                out.extend(cgroup_procs(Path(dirpath)))
    except OSError:
        pass
    return out


def own_cgroup() -> str | None:
    """This process's cgroup v2 path relative to the hierarchy's root ("/..."), if any."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        return None
    return None
