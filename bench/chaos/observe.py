"""Watching the services: the HTTP availability poller and the double runs in the markers.

Also :func:`log`, the progress lines (stderr).
"""

from __future__ import annotations

import http.client
import itertools
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bench.markers import ALIVE_SLACK_NS, read_copies

POLL_EVERY_S: Final = 0.1
ASK_TIMEOUT_S: Final = 0.25


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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
