"""Measured CPU and memory use of a live node and its services, for the ``dynamic`` scheduler (issue #14).

Every service of a live node runs in its own cgroup under the node's cgroup
``<cgroup_base>/<node>``: ``<name>`` for ``proc:<name>``, ``ocf:<name>`` for
``ocf:<name>`` (agents/proc.py, agents/ocf.py); ``_daemon`` holds ha-node
itself. :class:`UsageSampler` reads, per sample:

* CPU: ``usage_usec`` of each cgroup's ``cpu.stat`` (cgroup v2 keeps it in
  every cgroup, no controller needed); the delta over the elapsed time is the
  number of cores in use. The node's own ``cpu.stat`` counts everything in it
  (services, ha-node, actions in flight).
* Memory: ``memory.current`` where the memory controller is enabled for the
  cgroup; otherwise (a hybrid host whose memory controller is on cgroup v1) the
  resident set of the cgroup's processes (``cgroup.procs``, ``/proc/<pid>/statm``).
  The node's memory is its own ``memory.current``, else the sum over its cgroups.

Without a node cgroup (no cgroup v2) the node is the whole host (``/proc/stat``,
``MemTotal - MemAvailable`` of ``/proc/meminfo``) and no service is measured.

Values are smoothed with an exponentially weighted moving average (time constant
``smoothing`` seconds; a service's first measurement is taken as it is). A
sample costs a handful of small reads per service, O(services), never a scan
of ``/proc``; it is taken at most every ``interval`` seconds (issue #17: a node
at rest stays cheap). :meth:`UsageSampler.snapshot` rounds the values
(0.01 core, 1 MiB) and :func:`significant` tells whether a change is worth an
``lrm_status`` write of its own (docs/RUNTIME.md, "Measured load").
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fence.procfs import cgroup_procs

MIB = 1024 * 1024
SAMPLE_INTERVAL = 2.0  # s between two samples
SMOOTHING = 4.0  # s: the EWMA's time constant
MIN_GAP = 0.5  # s: a forced sample closer than this to the last one is not taken (noisy delta)
# a change is significant (worth a write of its own) when it is at least this large
CPU_STEP = 0.1  # cores
CPU_REL = 0.2
MEM_STEP = 32 * MIB
MEM_REL = 0.1

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Usage:
    """One node's measured use: cores and bytes, in total and per service (sid -> (cpu, mem))."""

    cpu: float
    mem: float
    services: dict[str, tuple[float, float]] = field(default_factory=dict)


def read_cpu_usec(cgroup: Path) -> int | None:
    """``usage_usec`` of the cgroup's ``cpu.stat`` (None when it cannot be read)."""
    try:
        with open(cgroup / "cpu.stat", encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value)
    except (OSError, ValueError):
        return None
    return None


def read_memory(cgroup: Path) -> int | None:
    """The cgroup's ``memory.current``, else the resident set of its processes; None when neither."""
    try:
        with open(cgroup / "memory.current", encoding="ascii") as f:
            return int(f.read())
    except (OSError, ValueError):
        pass
    if not (cgroup / "cgroup.procs").exists():
        return None
    total = 0
    for pid in cgroup_procs(cgroup):
        try:
            with open(f"/proc/{pid}/statm", encoding="ascii") as f:
                total += int(f.read().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            continue  # it exited meanwhile
    return total


def host_cpu_usec(path: str = "/proc/stat") -> int | None:
    """CPU time the host spent busy (user, nice, system, irq, softirq, steal), in microseconds."""
    try:
        with open(path, encoding="ascii") as f:
            fields = f.readline().split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    except (OSError, ValueError, IndexError):
        return None
    return (user + nice + system + irq + softirq + steal) * 1_000_000 // _TICK


def host_memory(path: str = "/proc/meminfo") -> int | None:
    """``MemTotal - MemAvailable`` in bytes."""
    values: dict[str, int] = {}
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    if len(values) != 2:
        return None
    return max(0, values["MemTotal"] - values["MemAvailable"])


def service_id(cgroup_name: str) -> str | None:
    """The sid of a service cgroup of the node (None for ``_daemon`` and other non-services)."""
    if not cgroup_name or cgroup_name.startswith((".", "_")):
        return None
    return cgroup_name if ":" in cgroup_name else f"proc:{cgroup_name}"


class _Rate:
    """A cumulative counter (microseconds) turned into a smoothed rate (cores)."""

    __slots__ = ("at", "counter", "value")

    def __init__(self, counter: int, at: float) -> None:
        self.counter = counter
        self.at = at
        self.value: float | None = None  # no rate before the second reading

    def update(self, counter: int, at: float, tau: float) -> None:
        dt = at - self.at
        if dt <= 0:
            return
        rate = max(0, counter - self.counter) / 1e6 / dt
        if self.value is None:
            self.value = rate
        else:
            alpha = 1.0 - math.exp(-dt / tau) if tau > 0 else 1.0
            self.value += alpha * (rate - self.value)
        self.counter = counter
        self.at = at


class UsageSampler:
    """The smoothed use of one node (its cgroup, else the host) and of the services in it.

    Not thread safe: one caller (the node's LRM) samples it.
    """

    def __init__(
        self,
        node_cgroup: Path | None,
        *,
        interval: float = SAMPLE_INTERVAL,
        smoothing: float = SMOOTHING,
        clock: Callable[[], float] = time.monotonic,
        proc_stat: str = "/proc/stat",
        meminfo: str = "/proc/meminfo",
    ) -> None:
        self.node_cgroup = node_cgroup
        self.interval = interval
        self.smoothing = smoothing
        self.clock = clock
        self._proc_stat = proc_stat
        self._meminfo = meminfo
        self._last: float | None = None
        self._node: _Rate | None = None
        self._node_mem = 0.0
        self._services: dict[str, tuple[_Rate, float]] = {}  # sid -> (cpu rate, memory)
        self.samples = 0  # how many were taken (tests, benchmarks)

    def due(self) -> bool:
        return self._last is None or self.clock() - self._last >= self.interval

    def sample(self, force: bool = False) -> bool:
        """Take a sample when one is due (``force``: unless the last is under ``MIN_GAP`` old)."""
        now = self.clock()
        if self._last is not None and now - self._last < (MIN_GAP if force else self.interval):
            return False
        self._last = now
        self.samples += 1
        cg = self.node_cgroup
        if cg is not None and (cg / "cpu.stat").exists():
            self._sample_cgroups(cg, now)
        else:
            self._services.clear()
            self._update_node(host_cpu_usec(self._proc_stat), host_memory(self._meminfo), now)
        return True

    def _update_node(self, usec: int | None, mem: int | None, now: float) -> None:
        if usec is None:
            self._node = None
        elif self._node is None:
            self._node = _Rate(usec, now)
        else:
            self._node.update(usec, now, self.smoothing)
        self._node_mem = float(mem or 0)

    def _sample_cgroups(self, cg: Path, now: float) -> None:
        seen: dict[str, tuple[_Rate, float]] = {}
        children_mem = 0
        try:
            entries = [e for e in os.scandir(cg) if e.is_dir(follow_symlinks=False)]
        except OSError:
            entries = []
        for entry in entries:
            path = Path(entry.path)
            mem = read_memory(path) or 0
            children_mem += mem
            sid = service_id(entry.name)
            usec = read_cpu_usec(path) if sid is not None else None
            if sid is None or usec is None:
                continue
            old = self._services.get(sid)
            if old is None:
                rate = _Rate(usec, now)
            else:
                rate = old[0]
                rate.update(usec, now, self.smoothing)
            seen[sid] = (rate, float(mem))
        self._services = seen  # a service whose cgroup is gone is forgotten at once
        node_mem: int | None
        try:
            with open(cg / "memory.current", encoding="ascii") as f:
                node_mem = int(f.read())
        except (OSError, ValueError):
            node_mem = children_mem
        self._update_node(read_cpu_usec(cg), node_mem, now)

    def snapshot(self) -> Usage | None:
        """The rounded smoothed values; None until the node's CPU has two readings.

        A service appears once its own CPU has two readings and something runs in
        it (memory in use or CPU time spent).
        """
        if self._node is None or self._node.value is None:
            return None
        services = {}
        for sid, (rate, mem) in sorted(self._services.items()):
            if rate.value is None:
                continue
            cpu = round(rate.value, 2)
            if mem <= 0 and cpu <= 0:
                continue  # an empty cgroup (a service stopping, an action's leftover)
            services[sid] = (cpu, _round_mem(mem))
        return Usage(round(self._node.value, 2), _round_mem(self._node_mem), services)


def _round_mem(mem: float) -> float:
    return float(round(mem / MIB) * MIB)


def _changed(old: float, new: float, step: float, rel: float) -> bool:
    return abs(new - old) >= max(step, rel * max(old, new))


def significant(old: Usage | None, new: Usage | None) -> bool:
    """Does ``new`` differ enough from ``old`` (what was last written) to be written on its own?

    Yes when one of them is missing, a service appeared or left, or a CPU value
    moved by ``CPU_STEP`` cores and ``CPU_REL`` of itself, or a memory value by
    ``MEM_STEP`` and ``MEM_REL``. Smaller changes ride along with the next write.
    """
    if old is None or new is None:
        return old is not new
    if old.services.keys() != new.services.keys():
        return True
    pairs = [((old.cpu, old.mem), (new.cpu, new.mem))]
    pairs += [(old.services[sid], new.services[sid]) for sid in new.services]
    return any(
        _changed(o[0], n[0], CPU_STEP, CPU_REL) or _changed(o[1], n[1], MEM_STEP, MEM_REL) for o, n in pairs
    )
