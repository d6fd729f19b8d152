"""Live fault injection, in the spirit of Jepsen's nemesis: ``python -m bench chaos``.

    python -m bench chaos --minutes M --seed S [--nodes 3|5] [--store dir|etcd] [--services N]
                          [--kinds K1,K2,...] [--settle S] [--cover] [--fail-fast]
                          [--both-kill-gap S] [--both-stop-gap S] [--dir DIR] [--json]

A live cluster (bench/livecluster.py: real ``ha-node`` processes, their
``ha-watchdog``s, N demo HTTP services with markers) gets a random but seeded
schedule of faults until M minutes are used up (no new fault starts after
that). Every fault hits one node at most and is healed before the next one
starts, so a majority always stays. After every step the services' markers
(agents/markers.py: flock ``overlap`` lines, start/alive/stop intervals) are
checked for double runs; a poller thread asks every service over HTTP about
every 100 ms and keeps, per service, the longest time no copy answered and the
fault going on when it stopped answering. At the end everything is healed and
the cluster gets ``--settle`` seconds until every service answers again.

Fault kinds (``--kinds``; weights in :data:`WEIGHTS`, hold times in :data:`HOLD_S`):

``node_kill``       ``ha-cluster kill``: the node's whole tree (a host crash; on etcd with its
                    member), restarted with ``ha-cluster up`` after a random hold
``daemon_kill``     SIGKILL of ``ha-node`` only (its watchdog must fence the node)
``daemon_stop``     SIGSTOP of ``ha-node`` for 0.5-8 s, then SIGCONT
``watchdog_kill``   SIGKILL of ``ha-watchdog`` only
``watchdog_stop``   SIGSTOP of ``ha-watchdog`` for 0.5-8 s, then SIGCONT
``both_kill``       SIGKILL ``ha-watchdog``, wait :data:`BOTH_KILL_GAP_S`, SIGKILL ``ha-node``
``both_stop``       SIGSTOP ``ha-watchdog``, wait :data:`BOTH_STOP_GAP_S`, SIGSTOP ``ha-node``,
                    hold 0.5-8 s, SIGCONT both
``service_kill``    SIGKILL of one service's process group (its pid from its HTTP answer)
``partition``       ``ha-cluster partition`` of one node, ``heal`` after a random hold
                    (network namespaces: the cluster is created with them)
``etcd_kill``       SIGKILL of one etcd member, restarted after a random hold (``--store etcd``)
``lrm_restart``     ``ha-cluster stop NODE --kind restart``, then ``up``
``migrate``         ``ha-manager migrate`` of a random service to a random other node

Healing a node: SIGCONT what was stopped, heal its partition, restart its etcd
member, and ``ha-cluster up NODE`` once its ``ha-node`` is gone (a node that
fenced itself exits: ha-node with code 2, its watchdog with code 3); the node
counts as back once its LRM writes its status again (it is quorate). A daemon
that keeps running without its watchdog for :data:`UNWATCHED_GRACE_S` is an
anomaly (reported; the node is killed and restarted).

The schedule first goes through every enabled kind once in a seeded random
order, then draws kinds by weight; ``--cover`` keeps going past M minutes
(at most :data:`COVER_LIMIT` times M) until that first round is complete. A
node fault hits, with probability :data:`BUSY_NODE_P`, a node that runs a
service, else any node. The seed fixes the kinds, hold times, pauses and
draws; which node a draw lands on depends on where the services run by then,
and the cluster's own timing is not repeatable.

The result (``--json``: the last line) names the faults injected by kind, the
double runs found (``double_runs``, must be empty: one entry per copy that
still ran while its service was started again, with when it first happened
and during which fault), the services not answering after the settle period
(``unavailable_at_end``, must be 0), services answering from another node
than the cluster thinks (``misplaced_at_end``: an orphaned copy), the longest
unavailability (service and fault), how often a node fenced itself (watchdog
``FIRING`` lines, ha-node exits with code 2 from its log) and the gaps used
for ``both_*``. Exit code 0 when there was no double run and every service
answers at the end, else 1 (130 when interrupted). Progress, one line per
fault, goes to stderr. The cluster is always torn down, also on Ctrl-C,
SIGTERM or errors, and whatever still runs with a path of the run in its
command line is killed (``leftover_processes`` counts those).
"""

# size: one benchmark: its schedule, availability poller, double-run accounting, run loop and command line;
#   not split yet

from __future__ import annotations

import argparse
import bisect
import contextlib
import http.client
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Final

from bench.livecluster import LiveCluster, process_cmdline
from bench.markers import ALIVE_SLACK_NS, read_copies
from ha.errors import HaError
from store.base import Store
from store.records import read_lrm_status

# both_kill: SIGKILL ha-watchdog, wait this long, SIGKILL ha-node. In user-space watchdog
# mode nothing is left to kill a node's services when both processes die at the same
# instant (only a kernel watchdog survives that), so the daemon gets this much time to see
# that its watchdog died (it polls it every pet_interval, 0.1 s) and take its node down.
BOTH_KILL_GAP_S: Final = 0.5
# both_stop: SIGSTOP ha-watchdog, wait this long, SIGSTOP ha-node, hold, SIGCONT both.
# Frozen together, neither can fence the other; the daemon gets this much time to notice
# that its watchdog stopped answering (a few pet intervals plus scheduling slack on a busy
# 2-core machine) and fence the node itself before it is frozen too.
BOTH_STOP_GAP_S: Final = 2.0
# how long a SIGSTOP is held (daemon_stop, watchdog_stop, both_stop), seconds
STOP_HOLD_S: Final = (0.5, 8.0)
# how long the other faults are held before they are healed, seconds: short holds heal
# before the cluster fences the node (lease_ttl 5 s), long ones after
HOLD_S: Final[dict[str, tuple[float, float]]] = {
    "node_kill": (1.0, 12.0),
    "daemon_kill": (1.0, 12.0),
    "watchdog_kill": (1.0, 12.0),
    "both_kill": (1.0, 12.0),
    "daemon_stop": STOP_HOLD_S,
    "watchdog_stop": STOP_HOLD_S,
    "both_stop": STOP_HOLD_S,
    "partition": (2.0, 12.0),
    "etcd_kill": (2.0, 10.0),
    "lrm_restart": (0.5, 5.0),
    "service_kill": (0.0, 0.0),
    "migrate": (0.0, 0.0),
}
# a node fault hits a node that runs a service with this probability, else any node (the master,
# an idle node): a fault on a node without services tests little but the control plane
BUSY_NODE_P: Final = 0.75
# a random pause after each step (once the services answer again), seconds
PAUSE_S: Final = (0.5, 3.0)
WEIGHTS: Final[dict[str, int]] = {
    "node_kill": 3,
    "daemon_kill": 2,
    "daemon_stop": 2,
    "watchdog_kill": 2,
    "watchdog_stop": 2,
    "both_kill": 1,
    "both_stop": 1,
    "service_kill": 2,
    "partition": 2,
    "etcd_kill": 2,
    "lrm_restart": 1,
    "migrate": 2,
}
KINDS: Final = tuple(WEIGHTS)
DIR_KINDS: Final = tuple(k for k in KINDS if k != "etcd_kill")
SERVICE_KINDS: Final = ("service_kill", "migrate")  # the others fault one node
POLL_EVERY_S: Final = 0.1
ASK_TIMEOUT_S: Final = 0.25
HEAL_TIMEOUT_S: Final = 45.0  # per node: bring it back (SIGCONT, up, quorate)
UNWATCHED_GRACE_S: Final = 10.0  # ha-node alive without its watchdog for this long: an anomaly
STEP_SETTLE_S: Final = 20.0  # after each heal: wait up to this long until every service answers
SETUP_CALM_S: Final = 2.0
COVER_LIMIT: Final = 2.0  # --cover goes on past --minutes, but not past this many times --minutes


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Interrupted(BaseException):
    """SIGTERM: tear down as on Ctrl-C."""


# -- the schedule ------------------------------------------------------------------------------


@dataclass
class Step:
    index: int
    kind: str
    pick: int  # node faults: which node (an index into the candidates, modulo their number)
    busy: bool  # node faults: the candidates are the nodes running a service (if any), else all
    hold: float
    pause: float
    service: int  # index into the services
    offset: int  # migrate: target = the (1 + offset)-th node after the current one
    node: str = ""  # the faulted node, chosen when the step starts

    @property
    def node_fault(self) -> bool:
        return self.kind not in SERVICE_KINDS

    def label(self, sids: list[str]) -> str:
        return f"#{self.index} {self.kind} {self.node if self.node_fault else sids[self.service]}"


class Schedule:
    """Seeded: every enabled kind once in random order, then kinds drawn by weight."""

    def __init__(self, seed: int, kinds: list[str], nodes: list[str], services: int) -> None:
        self.rng = random.Random(seed)
        self.kinds = kinds
        self.nodes = nodes
        self.services = services
        self.first_round = list(kinds)
        self.rng.shuffle(self.first_round)
        self.count = 0

    def covered(self) -> bool:
        return not self.first_round

    def retry(self, kind: str) -> None:
        """A step of a kind not injected yet could not be applied: that kind comes again next."""
        if kind not in self.first_round:
            self.first_round.insert(0, kind)

    def next(self) -> Step:
        self.count += 1
        r = self.rng
        if self.first_round:
            kind = self.first_round.pop(0)
        else:
            kind = r.choices(self.kinds, weights=[WEIGHTS[k] for k in self.kinds])[0]
        # always the same draws, whatever the kind: the rest of the schedule does not depend on it
        pick, busy = r.randrange(1 << 30), r.random() < BUSY_NODE_P
        lo, hi = HOLD_S[kind]
        hold = round(r.uniform(lo, hi), 2)
        pause = round(r.uniform(*PAUSE_S), 2)
        service = r.randrange(self.services)
        offset = r.randrange(max(1, len(self.nodes) - 1))
        return Step(self.count, kind, pick, busy, hold, pause, service, offset)


# -- the availability poller --------------------------------------------------------------------


def ask_one(host: str, port: int, sid: str) -> dict[str, object] | None:
    conn = http.client.HTTPConnection(host, port, timeout=ASK_TIMEOUT_S)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        data = json.loads(resp.read()) if resp.status == 200 else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()
    return data if isinstance(data, dict) and data.get("sid") == sid else None


@dataclass
class Availability:
    sid: str
    port: int
    last_ok: float
    answer: dict[str, object] | None = None
    asked_at: float = 0.0  # when the request that gave ``answer`` was sent
    hint: int = 0  # index of the host that answered last
    down_since: float | None = None  # first miss after last_ok
    down_fault: str = ""
    longest: float = 0.0
    longest_fault: str = ""
    gaps: list[tuple[float, float]] = field(default_factory=list)  # (first miss, length) of each outage

    def outage(self, now: float) -> float:
        return now - self.last_ok if self.down_since is not None else 0.0


class Poller:
    """One thread per service asks it every POLL_EVERY_S; the longest gap without an answer."""

    def __init__(self, hosts: list[str], ports: dict[str, int], fault: Callable[[], str]) -> None:
        self.hosts = hosts
        now = time.monotonic()
        self.state = {sid: Availability(sid, port, now) for sid, port in ports.items()}
        self.fault = fault
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._loop, args=(a,), name=f"poll-{a.sid}", daemon=True)
            for a in self.state.values()
        ]

    def start(self) -> None:
        now = time.monotonic()
        for a in self.state.values():
            a.last_ok = now
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=5)

    def _ask(self, a: Availability) -> dict[str, object] | None:
        n = len(self.hosts)
        for i in range(n):
            h = (a.hint + i) % n
            ans = ask_one(self.hosts[h], a.port, a.sid)
            if ans is not None:
                a.hint = h
                return ans
        return None

    def _loop(self, a: Availability) -> None:
        nxt = time.monotonic()
        while not self.stop_event.is_set():
            asked = time.monotonic()
            ans = self._ask(a)
            now = time.monotonic()
            with self.lock:
                a.answer, a.asked_at = ans, asked
                if ans is not None:
                    if a.down_since is not None:
                        gap = now - a.last_ok
                        a.gaps.append((a.down_since, gap))
                        if gap > a.longest:
                            a.longest, a.longest_fault = gap, a.down_fault
                        a.down_since = None
                    a.last_ok = now
                elif a.down_since is None:
                    a.down_since = now
                    a.down_fault = self.fault()
            nxt = max(nxt + POLL_EVERY_S, now)
            self.stop_event.wait(max(0.0, nxt - time.monotonic()))

    def answering(self, since: float = 0.0) -> dict[str, bool]:
        """Per service: did its last answer come from a request sent after SINCE (monotonic)."""
        with self.lock:
            return {sid: a.answer is not None and a.asked_at >= since for sid, a in self.state.items()}

    def answer(self, sid: str) -> dict[str, object] | None:
        with self.lock:
            return self.state[sid].answer

    def worst_since(self, t0: float) -> tuple[float, str]:
        """The longest outage (service, seconds) whose first miss came after T0, open ones included."""
        now = time.monotonic()
        best = (0.0, "")
        with self.lock:
            for sid, a in self.state.items():
                for start, gap in a.gaps:
                    if start >= t0 and gap > best[0]:
                        best = (gap, sid)
                if a.down_since is not None and a.down_since >= t0 and a.outage(now) > best[0]:
                    best = (a.outage(now), sid)
        return best

    def longest(self) -> dict[str, tuple[float, str]]:
        """Per service: the longest gap (an outage still open counts up to now) and its fault."""
        now = time.monotonic()
        out: dict[str, tuple[float, str]] = {}
        with self.lock:
            for sid, a in self.state.items():
                best = (a.longest, a.longest_fault)
                if a.outage(now) > best[0]:
                    best = (a.outage(now), a.down_fault + " (still not answering)")
                out[sid] = best
        return out


# -- double runs --------------------------------------------------------------------------------


@dataclass
class Incident:
    """One copy of a service that still ran while the service was started again (maybe many times)."""

    sid: str
    holder: str  # "node1 (pid 123)", or "?" when no copy's interval covers the event
    first: str  # when the first event happened: "+12.3s, #4 watchdog_kill node2 (healing)"
    events: int = 0  # overlap lines (failed second starts) and overlapping intervals
    where: set[str] = field(default_factory=set)  # nodes that started a second copy

    def describe(self) -> str:
        again = ", ".join(sorted(self.where))
        return (f"{self.sid}: the copy on {self.holder} still ran while it was started again on {again} "
                f"({self.events} time(s); first at {self.first})")  # fmt: skip


def double_run_events(marker_dir: Path) -> list[tuple[tuple[str, str], str, int, str]]:
    """Every double-run event in the markers: ((sid, holder), node that started again, time, raw text).

    Two kinds (agents/markers.py): an ``overlap`` line (a copy started while another held
    the service's lock, and gave up) and two copies whose start..last-alive intervals
    overlap (within ALIVE_SLACK_NS). Grouped by the copy that was still running; times in
    CLOCK_MONOTONIC ns (what ``time.monotonic_ns()`` reads: one clock for the whole host).
    """
    if not marker_dir.exists():
        return []
    copies, raw = read_copies(marker_dir)
    out: list[tuple[tuple[str, str], str, int, str]] = []
    for text in raw:
        sid, _, line = text.partition(": ")
        parts = line.split()
        t, node, pid = int(parts[1]), parts[2], int(parts[3])
        holder = "?"
        for cp in copies.get(sid, []):
            if (cp.node, cp.pid) != (node, pid) and cp.start <= t <= cp.end + ALIVE_SLACK_NS:
                holder = f"{cp.node} (pid {cp.pid})"
        out.append(((sid, holder), node, t, text))
    for sid, cs in copies.items():
        for a, b in itertools.pairwise(cs):
            if b.start < a.end + ALIVE_SLACK_NS:
                text = f"{sid}: copy on {b.node} (pid {b.pid}) started while {a.node} (pid {a.pid}) ran"
                out.append(((sid, f"{a.node} (pid {a.pid})"), b.node, b.start, text))
    return out


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Options:
    minutes: float
    seed: int
    nodes: int = 3
    store: str = "dir"
    services: int = 3
    kinds: list[str] = field(default_factory=lambda: list(DIR_KINDS))
    settle: float = 60.0
    cover: bool = False
    fail_fast: bool = False
    both_kill_gap: float = BOTH_KILL_GAP_S
    both_stop_gap: float = BOTH_STOP_GAP_S


# the ha-node log lines of an exit with code 2: a defined failure (the watchdog fences the node)
# and a self-fence (the daemon kills its node itself: its watchdog died or stalled)
FAILURE_EXIT_LINES: Final = ("node stopped (failure)", "fencing this node")


def count_lines(path: Path, needle: str) -> int:
    try:
        return sum(1 for line in path.read_text(errors="replace").splitlines() if needle in line)
    except OSError:
        return 0


class Chaos:
    def __init__(self, c: LiveCluster, opts: Options) -> None:
        self.c = c
        self.o = opts
        self.sids = [f"proc:svc{i}" for i in range(1, opts.services + 1)]
        self.faults = dict.fromkeys(opts.kinds, 0)
        self.incidents: dict[tuple[str, str], Incident] = {}
        self.seen_events: set[str] = set()
        self.anomalies: list[str] = []
        self.stopped: set[int] = set()  # pids we SIGSTOPped and did not SIGCONT yet
        self.partitioned: set[str] = set()
        self.etcd_down: set[str] = set()
        self.self_fenced = 0
        self.collateral: list[str] = []
        self.timeline: list[tuple[float, str]] = []  # (monotonic, phase): what was going on when
        self._current = "setup"
        self.t0 = time.monotonic()
        self.poller: Poller | None = None
        self.store: Store | None = None
        self.steps: list[dict[str, object]] = []
        self.inconsistent: list[str] = []

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

    def sig(self, node: str, what: str, sig: signal.Signals) -> int | None:
        """Send SIG to NODE's WHAT (ha-node / ha-watchdog) if it runs; its pid."""
        pid = self.c.running_pid(node, what)
        if pid is None:
            return None
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return None
        if sig == signal.SIGSTOP:
            self.stopped.add(pid)
        return pid

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
                if not self.cli(f"up {node}", lambda: self.c.up(node)):
                    self.sleep(1)
                since = time.time()
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
            if self.lrm_fresh(node, since):
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

    def healthy(self, node: str) -> bool:
        return (
            self.c.running_pid(node, "ha-node") is not None
            and self.c.running_pid(node, "ha-watchdog") is not None
            and self.lrm_fresh(node, time.time() - 3)
        )

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

    # -- faults -------------------------------------------------------------------------------
    def service_pid(self, sid: str) -> int | None:
        """The running demo service of SID: from its HTTP answer, else its newest marker copy."""
        assert self.poller is not None
        ans = self.poller.answer(sid) or self.c.ask(sid)
        pid: int | None = None
        if ans is not None and isinstance(ans.get("pid"), int):
            pid = int(str(ans["pid"]))
        else:
            copies, _ = read_copies(self.c.markers)
            if copies.get(sid):
                pid = copies[sid][-1].pid
        if pid is None:
            return None
        cmd = process_cmdline(pid)  # a recycled pid is not the service
        return pid if "agents.demo_service" in cmd and str(self.c.markers) in cmd else None

    def apply(self, s: Step) -> str | None:
        """Inject step S and hold it (the caller heals); None when applied, else why it was skipped."""
        c, node = self.c, s.node
        if s.kind == "node_kill":
            with_etcd = c.store_kind == "etcd"  # a host crash takes the member with it
            if not self.cli(f"kill {node}", lambda: c.kill(node, with_etcd=with_etcd)):
                return "kill failed"
            self.sleep(s.hold)
        elif s.kind in ("daemon_kill", "watchdog_kill"):
            what = "ha-node" if s.kind == "daemon_kill" else "ha-watchdog"
            if self.sig(node, what, signal.SIGKILL) is None:
                return f"{what} of {node} not running"
            self.sleep(s.hold)
        elif s.kind in ("daemon_stop", "watchdog_stop"):
            what = "ha-node" if s.kind == "daemon_stop" else "ha-watchdog"
            pid = self.sig(node, what, signal.SIGSTOP)
            if pid is None:
                return f"{what} of {node} not running"
            self.sleep(s.hold)
            self.cont(pid)
        elif s.kind == "both_kill":
            if self.sig(node, "ha-watchdog", signal.SIGKILL) is None:
                return f"ha-watchdog of {node} not running"
            self.sleep(self.o.both_kill_gap)
            if self.sig(node, "ha-node", signal.SIGKILL) is None:
                log(f"{self.t()}     (ha-node of {node} was gone before its SIGKILL)")
            self.sleep(s.hold)
        elif s.kind == "both_stop":
            wd = self.sig(node, "ha-watchdog", signal.SIGSTOP)
            if wd is None:
                return f"ha-watchdog of {node} not running"
            self.sleep(self.o.both_stop_gap)
            hn = self.sig(node, "ha-node", signal.SIGSTOP)
            if hn is None:
                log(f"{self.t()}     (ha-node of {node} was gone before its SIGSTOP)")
            self.sleep(s.hold)
            self.cont(wd)
            self.cont(hn)
        elif s.kind == "service_kill":
            sid = self.sids[s.service]
            pid = self.service_pid(sid)
            if pid is None:
                return f"{sid} has no running copy"
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except ProcessLookupError:
                return f"{sid} (pid {pid}) already gone"
            log(f"{self.t()}     {sid}: SIGKILLed process group of pid {pid}")
        elif s.kind == "partition":
            if not self.cli(f"partition {node}", lambda: c.partition(node)):
                return "partition failed"
            self.partitioned.add(node)
            self.sleep(s.hold)
        elif s.kind == "etcd_kill":
            if not self.cli(f"etcd-kill {node}", lambda: c.etcd_kill(node)):
                return "etcd-kill failed"
            self.etcd_down.add(node)
            self.sleep(s.hold)
        elif s.kind == "lrm_restart":
            if c.running_pid(node) is None:
                return f"ha-node of {node} not running"
            self.cli(f"stop {node} --kind restart", lambda: c.stop(node, kind="restart"))
            self.sleep(s.hold)
        elif s.kind == "migrate":
            sid = self.sids[s.service]
            assert self.poller is not None
            ans = self.poller.answer(sid)
            cur = str(ans["node"]) if ans is not None else (c.service_state(sid)[1] or "")
            i = c.nodes.index(cur) if cur in c.nodes else 0
            target = c.nodes[(i + 1 + s.offset) % len(c.nodes)]
            res = c.manager("migrate", sid, target, check=False)
            if res.returncode != 0:
                return f"migrate {sid} {target} refused: {(res.stderr or res.stdout).strip()[:200]}"
            log(f"{self.t()}     migrate {sid} {cur} -> {target}")
            try:
                c.wait_serving(sid, STEP_SETTLE_S, on=target)
            except AssertionError:
                self.note(f"{sid} not answering on {target} {STEP_SETTLE_S:g} s after the migrate")
        else:  # pragma: no cover - kinds are validated
            raise ValueError(s.kind)
        return None

    def target(self, s: Step) -> str:
        """The node a node fault hits (seeded pick among the nodes running a service, or all)."""
        assert self.poller is not None
        serving = sorted({str(a["node"]) for sid in self.sids if (a := self.poller.answer(sid)) is not None})
        cands = [n for n in serving if n in self.c.nodes] if s.busy else []
        cands = cands or self.c.nodes
        return cands[s.pick % len(cands)]

    def step(self, s: Step) -> None:
        if s.node_fault:
            s.node = self.target(s)
        label = s.label(self.sids)
        self.current = label
        before = self.fence_counts()
        t_start = time.monotonic()
        skipped = self.apply(s)
        held = time.monotonic() - t_start
        self.current = f"{label} (healing)"
        if s.node_fault:
            self.heal_node(s.node)
        healed = time.monotonic() - t_start - held
        self.current = f"{label} (settling)"
        waited = self.wait_answering(STEP_SETTLE_S)
        after = self.fence_counts()
        fenced = [n for n in self.c.nodes if after[n] != before[n]]
        if s.node_fault and s.node in fenced:
            self.self_fenced += 1
        for n in fenced:
            if n != s.node or not s.node_fault:
                self.collateral.append(f"{label}: {n} fenced itself")
        new, events = self.check_overlaps(label)
        assert self.poller is not None
        outage = self.poller.worst_since(t_start)
        if skipped is not None:
            log(f"{self.t()} {label}: skipped ({skipped})")
        else:
            self.faults[s.kind] += 1
            took = f"hold {held:.1f}s, healed in {healed:.1f}s" if s.node_fault else f"took {held:.1f}s"
            ans = f"all answering after {waited:.1f}s" if waited is not None else "NOT all answering"
            fence = f", fenced: {','.join(fenced)}" if fenced else ""
            out = f", longest outage {outage[0]:.1f}s ({outage[1]})" if outage[0] > 0 else ""
            dbl = (
                f", DOUBLE RUNS: {new} new ({events} event(s))" if new
                else f", {events} more event(s) of earlier double runs" if events
                else ", no double run"
            )  # fmt: skip
            log(f"{self.t()} {label}: {took}, {ans}{fence}{out}{dbl}")
        self.steps.append({
            "i": s.index, "kind": s.kind, "node": s.node if s.node_fault else None,
            "service": None if s.node_fault else self.sids[s.service], "hold_s": round(held, 2),
            "skipped": skipped, "fenced": fenced, "longest_outage_s": round(outage[0], 2),
            "new_double_runs": new,
        })  # fmt: skip
        self.current = f"after {label}"
        self.sleep(s.pause)

    # -- the whole run ------------------------------------------------------------------------
    def setup(self) -> None:
        c = self.c
        for i, sid in enumerate(self.sids):
            c.add_service(sid, c.nodes[i % len(c.nodes)])
        c.up()
        for i, sid in enumerate(self.sids):
            c.wait_serving(sid, 60, on=c.nodes[i % len(c.nodes)])
        self.poller = Poller(c.hosts, dict(c.ports), self.fault_label)
        self.poller.start()
        time.sleep(SETUP_CALM_S)  # answering is not yet started: let the LRMs finish their start checks

    def run(self) -> dict[str, object]:
        o = self.o
        sched = Schedule(o.seed, o.kinds, self.c.nodes, len(self.sids))
        log(f"{self.t()} setting up: {len(self.c.nodes)} nodes ({self.c.store_kind} store"
            f"{', network namespaces' if self.c.netns else ''}), {len(self.sids)} services")  # fmt: skip
        self.setup()
        self.check_overlaps("setup")
        self.t0 = time.monotonic()
        budget = o.minutes * 60
        log(f"{self.t()} faults for {o.minutes:g} min, seed {o.seed}, kinds {','.join(o.kinds)}")
        while True:
            used = time.monotonic() - self.t0
            if used >= budget and not (o.cover and not sched.covered() and used < COVER_LIMIT * budget):
                break
            if o.fail_fast and self.incidents:
                log(f"{self.t()} a double run was found: no more faults (--fail-fast)")
                break
            self.current = "between steps"
            down = self.heal_all()
            if down:
                # never fault a second node while one is still down: wait for it instead
                self.sleep(2)
                continue
            s = sched.next()
            self.step(s)
            if self.steps[-1]["skipped"] is not None and self.faults[s.kind] == 0:
                sched.retry(s.kind)  # not injected yet: keep the first round complete
        fault_time = time.monotonic() - self.t0
        self.current = "final heal"
        log(f"{self.t()} faults done ({sched.count} steps); healing everything, settling up to {o.settle:g}s")
        t_heal = time.monotonic()
        down = self.heal_all()
        self.current = "final settle"
        waited = self.wait_answering(max(1.0, o.settle - (time.monotonic() - t_heal)))
        settled = round(time.monotonic() - t_heal, 2) if waited is not None else None
        if waited is not None:
            self.sleep(1.0)  # a copy started late would show up in the markers now
        self.check_overlaps("end")
        self.inconsistent = self.where_at_end()
        return self.result(fault_time, settled, down)

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

    def result(self, fault_time: float, settled: float | None, down: list[str]) -> dict[str, object]:
        assert self.poller is not None
        answering = self.poller.answering()
        longest = self.poller.longest()
        worst_sid = max(longest, key=lambda s: longest[s][0]) if longest else None
        firings = sum(self.firings(n) for n in self.c.nodes)
        exits = sum(self.failure_exits(n) for n in self.c.nodes)
        unavailable = sorted(s for s, ok in answering.items() if not ok)
        return {
            "store": self.c.store_kind,
            "nodes": len(self.c.nodes),
            "services": len(self.sids),
            "seed": self.o.seed,
            "minutes": self.o.minutes,
            "kinds": self.o.kinds,
            "fault_time_s": round(fault_time, 1),
            "steps": len(self.steps),
            "faults": self.faults,
            "double_runs": [i.describe() for i in self.incidents.values()],
            "double_run_events": sum(i.events for i in self.incidents.values()),
            "unavailable_at_end": len(unavailable),
            "unavailable_services": unavailable,
            "nodes_down_at_end": down,
            "misplaced_at_end": self.inconsistent,
            "settled_after_s": settled,
            "longest_unavailability_s": round(longest[worst_sid][0], 2) if worst_sid else 0.0,
            "longest_unavailability": (
                {"service": worst_sid, "fault": longest[worst_sid][1]}
                if worst_sid and longest[worst_sid][0] > 0
                else None
            ),
            "unavailability_by_service": {
                s: {"longest_s": round(v, 2), "fault": f or None} for s, (v, f) in sorted(longest.items())
            },
            "nodes_self_fenced": self.self_fenced,
            "watchdog_firings": firings,
            "ha_node_failure_exits": exits,
            "collateral_fencing": self.collateral,
            "gaps": {"both_kill_gap_s": self.o.both_kill_gap, "both_stop_gap_s": self.o.both_stop_gap},
            "stop_hold_s": list(STOP_HOLD_S),
            "settle_s": self.o.settle,
            "anomalies": self.anomalies,
            "schedule": self.steps,
        }

    def teardown(self) -> list[int]:
        """Stop polling, SIGCONT what we stopped, tear the cluster down; leftover pids killed."""
        if self.poller is not None:
            self.poller.stop()
        for pid in list(self.stopped):
            self.cont(pid)
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.close()
        self.c.close()
        return self.c.kill_leftovers()


# -- command line -------------------------------------------------------------------------------


def parse_kinds(text: str, store: str) -> list[str]:
    allowed = KINDS if store == "etcd" else DIR_KINDS
    if text == "all":
        return list(allowed)
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in allowed]
    if bad or not kinds:
        raise ValueError(f"unknown or unsupported kind(s) for the {store} store: {', '.join(bad) or '(none)'}"
                         f" (choose from {', '.join(allowed)})")  # fmt: skip
    return list(dict.fromkeys(kinds))


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM raises (like Ctrl-C) while the run goes on; both are ignored during the teardown."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise Interrupted

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run(opts: Options, root: Path) -> tuple[dict[str, object], int]:
    netns = opts.store == "etcd" or "partition" in opts.kinds
    result: dict[str, object] = {}
    code = 1
    c: LiveCluster | None = None
    chaos: Chaos | None = None
    with signals_raise():
        try:
            c = LiveCluster(root, opts.nodes, netns=netns, store=opts.store)
            chaos = Chaos(c, opts)
            result = chaos.run()
            ok = not result["double_runs"] and result["unavailable_at_end"] == 0
            code = 0 if ok else 1
        except (KeyboardInterrupt, Interrupted):
            log("interrupted: tearing down")
            result = chaos.result(0.0, None, []) if chaos is not None and chaos.poller else {}
            result["error"] = "interrupted"
            code = 130
        except Exception as e:
            log(traceback.format_exc())
            result = chaos.result(0.0, None, []) if chaos is not None and chaos.poller else {}
            result["error"] = f"{type(e).__name__}: {e}"
            code = 1
        finally:
            # the teardown must finish: Ctrl-C and SIGTERM wait until it did
            old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
            old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
            try:
                left: list[int] = []
                if chaos is not None:
                    left = chaos.teardown()
                elif c is not None:
                    c.close()
                    left = c.kill_leftovers()
                if left:
                    log(f"teardown: killed {len(left)} leftover process(es): {left}")
                result["leftover_processes"] = len(left)
            finally:
                signal.signal(signal.SIGINT, old_int)
                signal.signal(signal.SIGTERM, old_term)
    return result, code


def as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench chaos", description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, required=True, help="inject faults for this long")
    ap.add_argument("--seed", type=int, required=True, help="the schedule's random seed")
    ap.add_argument("--nodes", type=int, choices=[3, 5], default=3)
    ap.add_argument("--store", choices=["dir", "etcd"], default="dir")
    ap.add_argument("--services", type=int, default=3, help="demo services (default 3)")
    ap.add_argument(
        "--kinds",
        default="all",
        help=f"comma-separated fault kinds (default all of the store's: {', '.join(KINDS)})",
    )
    ap.add_argument(
        "--settle",
        type=float,
        default=60.0,
        help="at the end: seconds to wait for every service to answer (default 60)",
    )
    ap.add_argument(
        "--cover",
        action="store_true",
        help=f"inject every enabled kind at least once, even past --minutes (at most {COVER_LIMIT:g} x)",
    )
    ap.add_argument(
        "--fail-fast",
        action="store_true",
        help="no more faults after the first double run (then heal, settle, report)",
    )
    ap.add_argument(
        "--both-kill-gap",
        type=float,
        default=BOTH_KILL_GAP_S,
        help=f"both_kill: seconds between the watchdog's and ha-node's SIGKILL ({BOTH_KILL_GAP_S})",
    )
    ap.add_argument(
        "--both-stop-gap",
        type=float,
        default=BOTH_STOP_GAP_S,
        help=f"both_stop: seconds between the watchdog's and ha-node's SIGSTOP ({BOTH_STOP_GAP_S})",
    )
    ap.add_argument("--dir", help="run the cluster in DIR and keep it (logs, markers); default: a temp dir")
    ap.add_argument("--json", action="store_true", help="end with one line holding a JSON object")
    args = ap.parse_args(argv)  # fmt: skip
    try:
        kinds = parse_kinds(args.kinds, args.store)
    except ValueError as e:
        ap.error(str(e))
    if args.services < 1 or args.minutes < 0 or args.settle < 0:
        ap.error("--services must be >= 1, --minutes and --settle >= 0")
    if args.both_kill_gap < 0.5 or args.both_stop_gap < 2.0:
        log("warning: gaps below 0.5 s (both_kill) / 2 s (both_stop) are beyond what a user-space "
            "watchdog can survive")  # fmt: skip
    if (args.store == "etcd" or "partition" in kinds) and (os.geteuid() != 0 or shutil.which("ip") is None):
        ap.error("network namespaces (partition, --store etcd) need root and iproute2")
    opts = Options(
        minutes=args.minutes, seed=args.seed, nodes=args.nodes, store=args.store, services=args.services,
        kinds=kinds, settle=args.settle, cover=args.cover, fail_fast=args.fail_fast,
        both_kill_gap=args.both_kill_gap, both_stop_gap=args.both_stop_gap,
    )  # fmt: skip
    if args.dir:
        root = Path(args.dir).absolute()
        root.mkdir(parents=True, exist_ok=True)
        result, code = run(opts, root)
        log(f"cluster directory kept: {root}")
    else:
        with tempfile.TemporaryDirectory(prefix="pyha-chaos-") as tmp:
            result, code = run(opts, Path(tmp))
    summary = (
        f"faults {result.get('faults')}, double runs {len(as_list(result.get('double_runs')))}, "
        f"unavailable at end {result.get('unavailable_at_end')}, "
        f"longest unavailability {result.get('longest_unavailability_s')} s "
        f"({result.get('longest_unavailability')}), self-fenced {result.get('nodes_self_fenced')}"
    )
    print(summary)
    if args.json:
        print(json.dumps(result))
    return code
