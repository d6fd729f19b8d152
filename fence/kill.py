"""Killing a node's services and daemon: the firing path of ``ha-watchdog`` and of ``ha-node``'s guard.

Three kinds of target, each checked before it is killed:

* **cgroups** (the node's cgroup ``<base>/<node>``, which holds the node daemon
  in ``_daemon`` and every service in a child of its own): ``cgroup.kill`` kills
  every process of the subtree at once, including processes forking while it
  runs, so no launch in flight escapes. The file is opened ahead of time
  (:class:`CgroupKill`), so firing is one ``write(2)``.
* **process-group records** (the proc agent's state files): a group is killed
  only when the record was written in this boot and its leader is alive with
  the recorded start time (:func:`verify`). SAFETY: pids are reused; a stale
  record must never get an unrelated process group killed.
* **pids** (the node daemon, known from ``SO_PEERCRED`` or a pid file): each
  remembered with its start time and checked the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fence.procfs import cgroup_tree_procs, read_boot_id, read_stat

KILL_SWEEPS = 5  # cgroup member sweeps after cgroup.kill (or instead of it on kernels < 5.14)


@dataclass(frozen=True, slots=True)
class GroupRecord:
    """A process group a resource agent started (agents/proc.py state file)."""

    source: str
    pgid: int
    starttime: int
    boot_id: str


@dataclass(frozen=True, slots=True)
class ProcessRef:
    """A pid plus the start time it had when we learnt it (None: it was already gone)."""

    pid: int
    starttime: int | None

    @classmethod
    def of(cls, pid: int) -> ProcessRef:
        st = read_stat(pid)
        return cls(pid, st.starttime if st is not None else None)

    def current(self) -> bool:
        """Still the same, live process (not a reused pid)."""
        st = read_stat(self.pid)
        return st is not None and st.alive and st.starttime == self.starttime


def load_group_records(dirs: Iterable[Path]) -> tuple[list[GroupRecord], list[str]]:
    """Every ``*.json`` state file below ``dirs`` with ``pgid``, ``starttime`` and ``boot_id``.

    Returns the records and a note per file that could not be used (it is then not killed).
    """
    records: list[GroupRecord] = []
    notes: list[str] = []
    for d in dirs:
        if not d.is_dir():
            continue
        for f in sorted(d.rglob("*.json")):
            try:
                data = json.loads(f.read_bytes())
                rec = GroupRecord(str(f), int(data["pgid"]), int(data["starttime"]), str(data["boot_id"]))
            except (OSError, ValueError, KeyError, TypeError) as e:
                notes.append(f"{f}: not a process-group record ({type(e).__name__})")
                continue
            records.append(rec)
    return records, notes


def verify(rec: GroupRecord, boot_id: str) -> str | None:
    """None when ``rec`` names a live group that provably is the recorded one, else why not."""
    if rec.pgid <= 1:
        return f"pgid {rec.pgid} is not a process group we may kill"
    if rec.boot_id != boot_id:
        return "recorded in another boot"
    st = read_stat(rec.pgid)
    if st is None or not st.alive:
        return "its leader is gone"
    if st.pgrp != rec.pgid or st.starttime != rec.starttime:
        # SAFETY: the number now belongs to another process (pid reuse): not ours to kill
        return "the pid was reused by another process"
    return None


class CgroupKill:
    """``cgroup.kill`` of one cgroup, opened ahead of time so that firing is one write."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        self.fd: int | None = None
        self.problem: str | None = None
        try:
            if create:
                path.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(path / "cgroup.kill", os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            self.problem = f"{path}/cgroup.kill: {e.strerror or e}"

    def fire(self) -> bool:
        """Kill the whole subtree; True when the kernel took the request."""
        if self.fd is None:
            return False
        try:
            os.write(self.fd, b"1")
            return True
        except OSError:
            return False

    def sweep(self) -> int:
        """SIGKILL every process still listed in the subtree (kernels without cgroup.kill)."""
        n = 0
        for pid in cgroup_tree_procs(self.path):
            if pid == os.getpid():
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                n += 1
        return n

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


@dataclass
class FireReport:
    cgroups: int = 0
    groups: int = 0
    pids: int = 0
    swept: int = 0
    skipped: list[str] = field(default_factory=list)

    @property
    def kills(self) -> int:
        return self.cgroups + self.groups + self.pids + self.swept

    def describe(self) -> str:
        parts = [
            f"{self.cgroups} cgroup(s) killed",
            f"{self.groups} process group(s)",
            f"{self.pids} pid(s)",
        ]
        if self.swept:
            parts.append(f"{self.swept} straggler(s) swept")
        return ", ".join(parts)


class NodeKiller:
    """Everything one node runs: its cgroups, its agents' process groups and its daemon."""

    def __init__(
        self,
        cgroups: Iterable[Path] = (),
        record_dirs: Iterable[Path] = (),
        pids: Iterable[int] = (),
        *,
        create_cgroups: bool = False,
        boot_id: str | None = None,
    ) -> None:
        self.cgroups = [CgroupKill(p, create=create_cgroups) for p in cgroups]
        self.record_dirs = list(record_dirs)
        self.pids = [ProcessRef.of(p) for p in pids]
        self.boot_id = boot_id if boot_id is not None else read_boot_id()

    @property
    def problems(self) -> list[str]:
        return [c.problem for c in self.cgroups if c.problem is not None]

    def add_pid(self, pid: int) -> None:
        self.pids.append(ProcessRef.of(pid))

    def fire(self, *, cgroups_last: bool = False) -> FireReport:
        """Kill everything. ``cgroups_last``: for a caller inside the node's cgroup (ha-node).

        ha-watchdog kills the cgroups first (daemon, services and any launch in flight
        die together, so nothing can start a new service afterwards), then the
        recorded groups and pids. ha-node, which lives in the node's cgroup, kills the
        groups and pids first, then its own cgroup, which ends it.
        """
        rep = FireReport()
        if not cgroups_last:
            self._fire_cgroups(rep)
        records, notes = load_group_records(self.record_dirs)
        rep.skipped.extend(notes)
        me = os.getpid()
        for rec in records:
            why = verify(rec, self.boot_id)
            if why is not None:
                if why != "its leader is gone":
                    rep.skipped.append(f"process group {rec.pgid} ({rec.source}): {why}")
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(rec.pgid, signal.SIGKILL)
                rep.groups += 1
        for ref in self.pids:
            if ref.pid == me or not ref.current():
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(ref.pid, signal.SIGKILL)
                rep.pids += 1
        if cgroups_last:
            self._fire_cgroups(rep)
        return rep

    def _fire_cgroups(self, rep: FireReport) -> None:
        for cg in self.cgroups:
            if cg.fire():
                rep.cgroups += 1
        for _ in range(KILL_SWEEPS):
            swept = sum(cg.sweep() for cg in self.cgroups)
            rep.swept += swept
            if not swept:
                break

    def close(self) -> None:
        for cg in self.cgroups:
            cg.close()
