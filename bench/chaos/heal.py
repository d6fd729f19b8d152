"""What the nemesis keeps track of, how it brings a node back, and the checks after each step.

:class:`Healer` is the base of :class:`bench.chaos.nemesis.Chaos`: the run's phase
(what was going on when), the faults still in effect (stopped pids, partitions, etcd
members down), healing them, and the checks: double runs in the markers, every service
answering again, nodes that fenced themselves, copies answering from the wrong node.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from bench.chaos.observe import Incident, Poller, double_run_events, log
from bench.livecluster import LiveCluster
from ha.errors import HaError
from store.base import Store
from store.records import read_lrm_status, read_manager_status

HEAL_TIMEOUT_S: Final = 45.0  # per node: bring it back (SIGCONT, up, quorate)
UNWATCHED_GRACE_S: Final = 10.0  # ha-node alive without its watchdog for this long: an anomaly

# the ha-node log lines of an exit with code 2: a defined failure (the watchdog fences the node)
# and a self-fence (the daemon kills its node itself: its watchdog died or stalled)
FAILURE_EXIT_LINES: Final = ("node stopped (failure)", "fencing this node")


def count_lines(path: Path, needle: str) -> int:
    try:
        return sum(1 for line in path.read_text(errors="replace").splitlines() if needle in line)
    except OSError:
        return 0


class Healer:
    """The faults in effect and the run's phase; healing the nodes, and the checks after each step."""

    def __init__(self, c: LiveCluster, sids: list[str]) -> None:
        self.c = c
        self.sids = sids
        self.incidents: dict[tuple[str, str], Incident] = {}
        self.seen_events: set[str] = set()
        self.anomalies: list[str] = []
        self.stopped: set[int] = set()  # pids we SIGSTOPped and did not SIGCONT yet
        self.partitioned: set[str] = set()
        self.etcd_down: set[str] = set()
        self.timeline: list[tuple[float, str]] = []  # (monotonic, phase): what was going on when
        self._current = "setup"
        self.t0 = time.monotonic()
        self.poller: Poller | None = None
        self.store: Store | None = None

    # -- small helpers ------------------------------------------------------------------------
    @property
    def current(self) -> str:
        """The phase of the run: "#4 watchdog_kill node2", "... (healing)", "after ...", ..."""
        return self._current

    @current.setter
    def current(self, phase: str) -> None:
        self._current = phase
        self.timeline.append((time.monotonic(), phase))

    def phase_at(self, t: float) -> str:
        """The phase at monotonic time T."""
        i = bisect.bisect_right(self.timeline, t, key=lambda e: e[0])
        return self.timeline[i - 1][1] if i else "setup"

    def t(self) -> str:
        return f"[{time.monotonic() - self.t0:7.1f}s]"

    def note(self, msg: str) -> None:
        self.anomalies.append(f"{self.current}: {msg}")
        log(f"{self.t()}   ! {msg}")

    def fault_label(self) -> str:
        return self.current

    def lrm_fresh(self, node: str, since: float) -> bool:
        """NODE's LRM wrote its lrm_status after SINCE (wall clock): it is up and quorate."""
        if self.store is None:
            self.store = self.c.open_store()
        try:
            ts = read_lrm_status(self.store, node).timestamp
        except (HaError, OSError):
            return False
        return ts is not None and ts >= since

    def firings(self, node: str) -> int:
        return count_lines(self.c.dir / "logs" / f"{node}.watchdog.log", "FIRING")

    def failure_exits(self, node: str) -> int:
        """ha-node exits with code 2 (EXIT_FENCED), from its log: a defined failure, or a self-fence."""
        path = self.c.dir / "logs" / f"{node}.log"
        return sum(count_lines(path, needle) for needle in FAILURE_EXIT_LINES)

    def fence_counts(self) -> dict[str, tuple[int, int]]:
        return {n: (self.firings(n), self.failure_exits(n)) for n in self.c.nodes}

    def cont(self, pid: int | None) -> None:
        if pid is None:
            return
        self.stopped.discard(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)

    def cli(self, what: str, fn: Callable[[], object]) -> bool:
        """Run a cluster command; a failure is noted (it is retried by the next heal), not raised."""
        try:
            fn()
            return True
        except (AssertionError, subprocess.TimeoutExpired) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            self.note(f"{what} failed: {first[:300]}")
            return False

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    # -- healing ------------------------------------------------------------------------------
    def heal_node(self, node: str) -> bool:
        """Bring NODE back: SIGCONT, heal, etcd member, ``up`` once its ha-node is gone. Bounded."""
        for pid in list(self.stopped):
            self.cont(pid)
        if node in self.partitioned:
            self.heal_partition(node)
        if node in self.etcd_down and self.cli(f"etcd-start {node}", lambda: self.c.etcd_start(node)):
            self.etcd_down.discard(node)
        since = time.time()
        deadline = time.monotonic() + HEAL_TIMEOUT_S
        unwatched: float | None = None
        wd_gone_wait: float | None = None
        while time.monotonic() < deadline:
            hn = self.c.running_pid(node, "ha-node")
            wd = self.c.running_pid(node, "ha-watchdog")
            if hn is None:
                unwatched = None
                if wd is not None:
                    # the old watchdog is still firing or exiting: let it finish first
                    wd_gone_wait = wd_gone_wait or time.monotonic()
                    if time.monotonic() - wd_gone_wait < 10:
                        self.sleep(0.1)
                        continue
                    self.note(f"{node}'s ha-watchdog (pid {wd}) outlived its ha-node by 10 s; killing it")
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(wd, signal.SIGKILL)
                since = time.time()  # its first lrm_status write comes after this
                if not self.cli(f"up {node}", lambda: self.c.up(node)):
                    self.sleep(1)
                continue
            if wd is None:
                # SAFETY: a daemon without its watchdog must take itself down (and its services)
                unwatched = unwatched or time.monotonic()
                if time.monotonic() - unwatched > UNWATCHED_GRACE_S:
                    self.note(
                        f"{node}'s ha-node (pid {hn}) kept running {UNWATCHED_GRACE_S:g} s without its "
                        "watchdog; killing the node"
                    )
                    self.cli(f"kill {node}", lambda: self.c.kill(node))
                    unwatched = None
                else:
                    self.sleep(0.1)
                continue
            unwatched = None
            if self.lrm_fresh(node, since) or (self.healthy(node) and self.master_counts_online(node)):
                return True
            self.sleep(0.1)
        self.note(f"{node} not back (running and quorate) {HEAL_TIMEOUT_S:g} s after the heal began")
        return False

    def heal_partition(self, node: str) -> None:
        if self.cli(f"heal {node}", lambda: self.c.heal(node)):
            self.partitioned.discard(node)

    def heal_all(self) -> list[str]:
        """Heal every node; the ones that did not come back."""
        for pid in list(self.stopped):
            self.cont(pid)
        for n in sorted(self.partitioned):
            self.heal_partition(n)
        if self.etcd_down and self.cli("etcd-start", lambda: self.c.etcd_start(*sorted(self.etcd_down))):
            self.etcd_down.clear()
        return [n for n in self.c.nodes if not self.healthy(n) and not self.heal_node(n)]

    def master_counts_online(self, node: str) -> bool:
        """The master's manager_status has NODE online (it writes that on a change at once)."""
        if self.store is None:
            self.store = self.c.open_store()
        try:
            return read_manager_status(self.store)[0].node_status.get(node) == "online"
        except (HaError, OSError):
            return False

    def healthy(self, node: str) -> bool:
        # an LRM at rest writes its status on a change only (issue #17): a node is well when its
        # processes run and the master counts it online (it is up on the bus, in the majority)
        return (
            self.c.running_pid(node, "ha-node") is not None
            and self.c.running_pid(node, "ha-watchdog") is not None
            and self.master_counts_online(node)
        )

    # -- checks -------------------------------------------------------------------------------
    def wait_answering(self, timeout: float) -> float | None:
        """Wait until every service answers; seconds waited, None on timeout."""
        assert self.poller is not None
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if all(self.poller.answering(since=t0).values()):
                return time.monotonic() - t0
            self.sleep(0.1)
        return None

    def check_overlaps(self, where: str) -> tuple[int, int]:
        """Read the markers: (new double runs, new events); each new double run is printed."""
        new_incidents = new_events = 0
        for key, node, t, text in double_run_events(self.c.markers):
            if text in self.seen_events:
                continue
            self.seen_events.add(text)
            new_events += 1
            inc = self.incidents.get(key)
            if inc is None:
                when = f"+{t / 1e9 - self.t0:.1f}s, {self.phase_at(t / 1e9)}"
                inc = self.incidents[key] = Incident(key[0], key[1], when)
                new_incidents += 1
                log(f"{self.t()}   DOUBLE RUN (at {when}): {text}")
            inc.events += 1
            inc.where.add(node)
        return new_incidents, new_events

    def where_at_end(self) -> list[str]:
        """Services whose answering copy is not where the cluster thinks it runs (an orphan copy)."""
        assert self.poller is not None
        out = []
        try:
            status = self.c.manager_status().service_status
        except (HaError, AssertionError) as e:
            return [f"manager_status unreadable: {e}"]
        for sid in self.sids:
            ans = self.poller.answer(sid)
            sd = status.get(sid)
            state, node = (sd.state, sd.node) if sd is not None else (None, None)
            if ans is not None and (state != "started" or ans.get("node") != node):
                out.append(f"{sid} answers from {ans.get('node')}, the cluster has it {state} on {node}")
        return out
