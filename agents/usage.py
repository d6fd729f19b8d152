"""Measured CPU and memory use of a live node and its services, for the ``dynamic`` scheduler (issue #14).

Every service of a live node runs in its own cgroup under the node's cgroup
``<cgroup_base>/<node>``: ``<name>`` for ``proc:<name>``, ``ocf:<name>`` for
``ocf:<name>`` (agents/proc.py, agents/ocf.py); ``_daemon`` holds ha-node
itself. :class:`UsageSampler` reads, per sample:

* CPU: ``usage_usec`` of each cgroup's ``cpu.stat`` (cgroup v2 keeps it in
  every cgroup, no controller needed); the delta over the elapsed time is the
  number of cores in use. The node's is the sum over its cgroups (services,
  ha-node, actions in flight): a service that left no longer counts at once.
* Memory: ``memory.current`` where the memory controller is enabled for the
  cgroup; otherwise (a hybrid host whose memory controller is on cgroup v1) the
  resident set of the cgroup's processes (``cgroup.procs``, ``/proc/<pid>/statm``).
  The node's memory is its own ``memory.current``, else the sum over its cgroups.

Without a node cgroup (no cgroup v2) the node is the whole host (``/proc/stat``,
``MemTotal - MemAvailable`` of ``/proc/meminfo``) and no service is measured.

Values are smoothed with an exponentially weighted moving average (time constant
``smoothing`` seconds; a cgroup's first rate is taken as it is). A sample costs
a handful of small reads per cgroup, O(services), never a scan of ``/proc``; it
is taken at most every ``interval`` seconds (issue #17: a node at rest stays
cheap). :meth:`UsageSampler.snapshot` rounds the values (0.01 core, 1 MiB): the
LRM carries them in the ``lrm_status`` writes it makes anyway (docs/RUNTIME.md,
"Measured load").
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
MIN_GAP = 0.25  # s: a forced sample closer than this to the last one is not taken (noisy delta)

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Usage:
    """One node's measured use: cores and bytes, in total and per service (sid -> (cpu, mem))."""

    cpu: float
    mem: float
    services: dict[str, tuple[float, float]] = field(default_factory=dict)

    def moved_from(self, old: Usage | None) -> bool:
        """A change the dynamic scheduler would care about: worth an lrm_status write (issue #17).

        A new or gone service, or a value (the node's or a service's) that moved by
        more than :data:`MOVE_SHARE` of itself and more than :data:`MOVE_CPU` cores
        or :data:`MOVE_MEM` bytes. The rounding noise of a steady load is not a change.
        """
        if old is None or old.services.keys() != self.services.keys():
            return True
        pairs = [((old.cpu, old.mem), (self.cpu, self.mem))]
        pairs += [(old.services[sid], use) for sid, use in self.services.items()]
        return any(
            _moved(a_cpu, b_cpu, MOVE_CPU) or _moved(a_mem, b_mem, MOVE_MEM)
            for (a_cpu, a_mem), (b_cpu, b_mem) in pairs
        )


MOVE_SHARE = 0.1  # of the larger value
MOVE_CPU = 0.05  # cores
MOVE_MEM = 16 * MIB


def _moved(a: float, b: float, floor: float) -> bool:
    diff = abs(a - b)
    return diff > floor and diff > MOVE_SHARE * max(abs(a), abs(b))


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
        self._host: _Rate | None = None  # the host's CPU (no node cgroup)
        self._node_cpu: float | None = None
        self._node_mem = 0.0
        self._children: dict[str, tuple[_Rate, float]] = {}  # cgroup name -> (cpu rate, memory)
        self.samples = 0  # how many were taken (tests, benchmarks)

    def due(self) -> bool:
        return self._last is None or self.clock() - self._last >= self._interval(False)

    def _interval(self, force: bool) -> float:
        # until the node has a rate, the next sample is due as soon as it means something
        return MIN_GAP if force or self._node_cpu is None else self.interval

    def sample(self, force: bool = False) -> bool:
        """Take a sample when one is due (``force``, or no rate yet: unless the last is under
        ``MIN_GAP`` old)."""
        now = self.clock()
        if self._last is not None and now - self._last < self._interval(force):
            return False
        first = self._last is None
        self._last = now
        self.samples += 1
        cg = self.node_cgroup
        if cg is not None and (cg / "cpu.stat").exists():
            self._sample_cgroups(cg, now, first)
        else:
            self._children.clear()
            self._sample_host(now)
        return True

    def _sample_host(self, now: float) -> None:
        usec = host_cpu_usec(self._proc_stat)
        if usec is None:
            self._host = None
        elif self._host is None:
            self._host = _Rate(usec, now)
        else:
            self._host.update(usec, now, self.smoothing)
        self._node_cpu = None if self._host is None else self._host.value
        self._node_mem = float(host_memory(self._meminfo) or 0)

    def _sample_cgroups(self, cg: Path, now: float, first: bool) -> None:
        """Every cgroup of the node: its services, ha-node's ``_daemon``, anything else in it.

        The node's CPU is the sum of its cgroups' rates, so the load of a service
        that left is gone from it at once (the node cgroup's own smoothed counter
        would keep it for a while).
        """
        seen: dict[str, tuple[_Rate, float]] = {}
        try:
            entries = [e for e in os.scandir(cg) if e.is_dir(follow_symlinks=False)]
        except OSError:
            entries = []
        for entry in entries:
            path = Path(entry.path)
            usec = read_cpu_usec(path)
            if usec is None:
                continue
            mem = float(read_memory(path) or 0)
            old = self._children.get(entry.name)
            if old is None:
                seen[entry.name] = (_Rate(usec, now), mem)
            else:
                old[0].update(usec, now, self.smoothing)
                seen[entry.name] = (old[0], mem)
        self._children = seen  # a cgroup that is gone is forgotten at once
        try:
            with open(cg / "memory.current", encoding="ascii") as f:
                self._node_mem = float(int(f.read()))
        except (OSError, ValueError):
            self._node_mem = sum(mem for _, mem in seen.values())
        self._node_cpu = None if first else sum(r.value or 0.0 for r, _ in seen.values())

    def snapshot(self) -> Usage | None:
        """The rounded smoothed values; None until the node's CPU has two readings.

        A service appears once its CPU has a rate (two readings) and something runs
        in it (memory in use or CPU time spent).
        """
        if self._node_cpu is None:
            return None
        services = {}
        for name, (rate, mem) in sorted(self._children.items()):
            sid = service_id(name)
            if sid is None or rate.value is None:
                continue
            cpu = round(rate.value, 2)
            if mem <= 0 and cpu <= 0:
                continue  # an empty cgroup (a service stopping, an action's leftover)
            services[sid] = (cpu, _round_mem(mem))
        return Usage(round(self._node_cpu, 2), _round_mem(self._node_mem), services)


def _round_mem(mem: float) -> float:
    return float(round(mem / MIB) * MIB)
