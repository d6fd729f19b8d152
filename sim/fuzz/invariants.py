"""The fuzzer's invariants: pure checks over plain data, and the :class:`Checker` that runs them.

Exact formulations and why they are sound: docs/fuzzing.md. The checks are plain
functions (the tests feed them hand-made states); the Checker feeds them the
simulator's state after every step and on the master's fencing acknowledgements.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ha.announce import Announcement, Announcer, ResultReport, What, answers_recheck, request_of
from ha.constants import LOCK_TIMEOUT
from ha.records import LrmResult, ManagerStatus, ServiceData
from ha.states import CrmState, ServiceState
from sim.hardware import Hardware

SINGLE_LOCATION = "single-location"
SINGLE_MASTER = "single-master"
FENCE_BEFORE_RECOVERY = "fence-before-recovery"
LIVENESS = "liveness"
START_UNDER_LOCK = "start-under-lock"
NO_FATAL_ERROR = "no-fatal-error"
CRASH = "crash"
ANNOUNCE = "announce"
# ours (issue #10): a config file that cannot be read (the ``config ... corrupt`` command) never
# takes a configured service out of management nor makes an agent run without its config
CONFIG_KEPT = "config-kept"
#: fatal simulator errors that are a limitation of the (reference) simulator's model, not of the
#: HA stack: with ``strict`` off such a run counts as *inconclusive*, not as a failure
KNOWN_LIMITATIONS = ("watchdog expired",)
INVARIANTS = (
    SINGLE_LOCATION,
    SINGLE_MASTER,
    FENCE_BEFORE_RECOVERY,
    LIVENESS,
    START_UNDER_LOCK,
    ANNOUNCE,
    CONFIG_KEPT,
    NO_FATAL_ERROR,
    CRASH,
)

MANAGER_LOCK = "ha_manager_lock"
# manager-side states whose services are never fenced nor recovered (§6.3)
NOT_RECOVERED = frozenset({"freeze", "error"})

_LOG_LINE = re.compile(r"^\S+\s+-?\d+\s+(\S+)/crm: (.*)$")
_ANY_LINE = re.compile(r"^\S+\s+-?\d+\s+(\S+)/(crm|lrm): (.*)$")
_REMOVED = re.compile(r"^removing stale service '([^']+)' \(no config\)$")
_MISSING = re.compile(r"^missing resource configuration for '([^']+)'$")
_FENCE_ACK = re.compile(r"^fencing: acknowledged - got agent lock for node '([^']+)'$")


def agent_lock(node: str) -> str:
    return f"ha_agent_{node}_lock"


@dataclass(frozen=True)
class Violation:
    invariant: str
    message: str
    time: int

    def __str__(self) -> str:
        return f"{self.invariant} at t={self.time}: {self.message}"


def check_single_location(running: dict[str, dict[str, int]]) -> list[str]:
    """Invariant 1: no service id is marked running (1) in the tables of two nodes."""
    where: dict[str, list[str]] = {}
    for node in sorted(running):
        for sid, flag in running[node].items():
            if flag:
                where.setdefault(sid, []).append(node)
    return [f"service {sid} runs on {', '.join(ns)}" for sid, ns in sorted(where.items()) if len(ns) > 1]


def check_starts(started: set[tuple[str, str]], locks: dict[str, tuple[str, int]], now: int) -> list[str]:
    """Invariant 5: a node starts a guest only while holding its own, unexpired agent lock."""
    errors = []
    for node, sid in sorted(started):
        held = locks.get(agent_lock(node))
        if held is None or held[0] != node or now - held[1] > LOCK_TIMEOUT:
            errors.append(f"{node} started {sid} without holding {agent_lock(node)} ({held})")
    return errors


def check_manager_write(
    ms: ManagerStatus, locks: dict[str, tuple[str, int]], writer_crm_state: str | None
) -> list[str]:
    """Invariant 2: a manager_status write comes from the unexpired holder of the manager lock."""
    writer = ms.master_node
    held = locks.get(MANAGER_LOCK)
    errors = []
    if held is None:
        errors.append(f"manager_status written by {writer} while nobody holds {MANAGER_LOCK}")
    else:
        owner, when = held
        stamp = int(ms.timestamp or 0)
        if owner != writer:
            errors.append(f"manager_status written by {writer} while {owner} holds {MANAGER_LOCK}")
        elif not 0 <= stamp - when <= LOCK_TIMEOUT:
            errors.append(
                f"manager_status written by {writer} at {stamp} with {MANAGER_LOCK} last renewed at {when}"
            )
    if writer_crm_state != CrmState.MASTER:
        errors.append(f"manager_status written by {writer} whose CRM is in state {writer_crm_state}")
    return errors


def check_fence_ack(
    fenced: str,
    master: str,
    locks: dict[str, tuple[str, int]],
    running: dict[str, dict[str, int]],
    service_status: dict[str, ServiceData],
) -> list[str]:
    """Invariant 3a, at the instant master acknowledges fencing ``fenced``.

    The master must hold the node's agent lock, and no service it is about to recover
    (state ``fence`` on that node) may still run there.
    """
    errors = []
    held = locks.get(agent_lock(fenced))
    if held is None or held[0] != master:
        errors.append(f"{master} acknowledged fencing {fenced} without holding {agent_lock(fenced)} ({held})")
    table = running.get(fenced, {})
    for sid in sorted(service_status):
        sd = service_status[sid]
        if sd.node == fenced and sd.state == "fence" and table.get(sid):
            errors.append(f"{master} fenced {fenced} while service {sid} still runs there")
    return errors


def check_fence_exit(
    before: dict[str, ServiceData],
    after: dict[str, ServiceData],
    writer: str,
    locks: dict[str, tuple[str, int]],
) -> list[str]:
    """Invariant 3b: a service leaves ``fence`` only while the writer holds the node's agent lock."""
    errors = []
    for sid in sorted(before):
        old = before[sid]
        new = after.get(sid)
        if old.state != "fence" or new is None or new.state == "fence":
            continue
        held = locks.get(agent_lock(old.node))
        if held is None or held[0] != writer:
            errors.append(
                f"service {sid} left 'fence' on {old.node} (now {new.state} on {new.node}) written by "
                f"{writer}, but {agent_lock(old.node)} is held by {held[0] if held else 'nobody'}"
            )
    return errors


def check_location_change(
    before: dict[str, str], after: dict[str, str], running: dict[str, dict[str, int]]
) -> list[str]:
    """Invariant 3c: a service's configured node changes X -> Y only when it does not run on X."""
    errors = []
    for sid, new in sorted(after.items()):
        old = before.get(sid)
        if old is None or old == new:
            continue
        if running.get(old, {}).get(sid):
            errors.append(f"service {sid} moved from {old} to {new} while still running on {old}")
    return errors


def requested_state(cd: dict[str, Any]) -> str:
    state = str(cd.get("state") or "disabled")
    return "started" if state == "enabled" else state


def check_liveness(
    config: dict[str, dict[str, Any]],
    running: dict[str, dict[str, int]],
    service_status: dict[str, ServiceData],
) -> list[str]:
    """Invariant 4, after healing: the cluster does what the configuration asks."""
    errors = []
    for sid in sorted(config):
        cd = config[sid]
        want = requested_state(cd)
        if want == "ignored":
            continue
        where = [n for n in sorted(running) if running[n].get(sid)]
        sd = service_status.get(sid)
        state = f"{sd.state} on {sd.node}" if sd is not None else "unmanaged"
        if want == "started":
            if where != [cd["node"]] or sd is None or sd.state != "started" or sd.node != cd["node"]:
                errors.append(
                    f"service {sid} should run on its node {cd['node']}: runs on {where or 'no node'}, "
                    f"manager state {state}"
                )
        elif where or sd is None or sd.state != "stopped":
            errors.append(
                f"service {sid} should be {want}: runs on {where or 'no node'}, manager state {state}"
            )
    return errors


@dataclass
class Told:
    """What one node process announced as master: the last request per service, and every UID."""

    last: dict[str, What] = field(default_factory=dict)
    uids: set[str] = field(default_factory=set)


def check_announcement(told: Told, ms: ManagerStatus, ann: Announcement) -> list[str]:
    """Invariant 6a, at a manager_status write: the commands its node announces (ha/announce.py).

    Every request in ``ms`` is announced exactly once by the writing process, except a
    re-check: a ``started`` request that differs from the last one announced for the
    service only by its UID, which is never announced. A service that leaves
    manager_status (or loses its UID) is forgotten. ``told`` is updated.
    """
    errors = []
    now: dict[str, str] = {}
    for c in ann.commands:
        sd = ms.service_status.get(c.sid)
        if sd is None or sd.uid != c.uid or request_of(sd) != c.what:
            errors.append(
                f"{ann.node} announced {c.sid} {c.what} ({c.uid}), which manager_status does not ask"
            )
        if c.uid in told.uids or c.sid in now:
            errors.append(f"{ann.node} announced {c.sid}'s request {c.uid} twice")
        elif c.state == ServiceState.STARTED and told.last.get(c.sid) == c.what:
            errors.append(f"{ann.node} announced a re-check of {c.sid} ({c.uid}) to {c.destination}")
        now[c.sid] = c.uid
    for sid in sorted(ms.service_status):
        sd = ms.service_status[sid]
        what = request_of(sd)
        if what is None:
            told.last.pop(sid, None)
            continue
        if now.get(sid) == sd.uid:
            told.last[sid] = what
            continue
        if sd.uid in told.uids:
            continue  # announced at an earlier write
        if sd.state == ServiceState.STARTED and told.last.get(sid) == what:
            continue  # a re-check: the LRM finds it at its next tick
        errors.append(f"{ann.node} did not announce {sid}'s request {what} ({sd.uid}) to {sd.node}")
    told.uids.update(now.values())
    for sid in set(told.last) - set(ms.service_status):
        del told.last[sid]
    return errors


def check_report(
    node: str, new: list[tuple[str, LrmResult]], ms: ManagerStatus, report: ResultReport
) -> list[str]:
    """Invariant 6b, at an lrm_status write with new results: every one reaches the master.

    Each new result is sent to the master of ``ms`` (or wakes the local CRM when that
    is this node) unless it answers a re-check: a successful ``started`` result for a
    service the master counts as running on this node is held back, and only such one.
    """
    errors = []
    sent = {r.uid: r for r in report.results}
    held = set(report.held)
    results = dict(new)
    for uid in sorted((set(sent) | held) - set(results)):
        errors.append(f"{node} announced result {uid}, which is no new result")
    for uid, r in new:
        if (uid in sent) == (uid in held):
            errors.append(
                f"{node}'s result {uid} ({r.sid}) is {'both sent and held' if uid in held else 'lost'}"
            )
        elif uid in held and not answers_recheck(r, ms, node):
            errors.append(
                f"{node} held back result {uid} ({r.sid} {r.state} {r.exit_code}), no re-check's answer"
            )
        elif uid in sent and answers_recheck(r, ms, node):
            errors.append(f"{node} sent result {uid} answering a re-check of {r.sid}")
        elif uid in sent and sent[uid].destination != ms.master_node:
            errors.append(
                f"{node} sent result {uid} to {sent[uid].destination}, the master is {ms.master_node}"
            )
    return errors


# -- the checker ------------------------------------------------------------------------------


class StopRun(Exception):
    """Ends a run from a hook; deliberately not an HaError (the runner catches those)."""


class Finished(StopRun):
    pass


class ViolationFound(StopRun):
    def __init__(self, violation: Violation) -> None:
        super().__init__(str(violation))
        self.violation = violation


class Checker:
    """Runs the safety checks after every step and on the master's fencing acknowledgements."""

    def __init__(self, hw_ref: Callable[[], Hardware]) -> None:
        self._hw = hw_ref
        self.steps = 0
        # how often each check had something to look at (the fuzzer's coverage, in the summary)
        self.stats: Counter[str] = Counter()
        self.last_ms: ManagerStatus | None = None
        self.locations: dict[str, str] | None = None
        self.running: set[tuple[str, str]] | None = None
        # set by the batch feed: the next step applies commands (``service add ... 1`` may mark a
        # guest running without any daemon involved)
        self.batch_applied = False
        # per node process (its Announcer): what it announced as master (invariant 6a)
        self.told: dict[int, tuple[Announcer, Told]] = {}

    def fail(self, invariant: str, errors: list[str]) -> None:
        if errors:
            raise ViolationFound(Violation(invariant, "; ".join(errors), self._hw().time))

    def on_line(self, line: str) -> None:
        if "execute config " in line and " corrupt " in line:
            self.stats["config corruptions"] += 1
        if "stale service" in line or "missing resource configuration" in line:
            self._check_config_kept(line)
        if "fencing: acknowledged" not in line:
            return
        m = _LOG_LINE.match(line)
        if m is None:
            return
        ack = _FENCE_ACK.match(m.group(2).rstrip("\n"))
        if ack is None:
            return
        hw = self._hw()
        master = m.group(1)
        crm = hw.nodes[master].crm
        manager = crm.manager if crm is not None else None
        ss = manager.ss if manager is not None else {}
        self.stats["fencings"] += 1
        self.fail(FENCE_BEFORE_RECOVERY, check_fence_ack(ack.group(1), master, hw.locks, hw.running, ss))

    def _check_config_kept(self, line: str) -> None:
        m = _ANY_LINE.match(line)
        if m is None:
            return
        what = _REMOVED.match(m.group(3).rstrip("\n")) or _MISSING.match(m.group(3).rstrip("\n"))
        if what is None:
            return
        hw = self._hw()
        sid = what.group(1)
        cd = hw.service_raw.get(sid)
        configured = cd is not None and requested_state(cd) != "ignored"
        if configured:
            self.fail(
                CONFIG_KEPT, [f"{m.group(1)}/{m.group(2)}: {m.group(3).strip()} while {sid} is configured"]
            )

    def on_announce(self, announcer: Announcer, ms: ManagerStatus, ann: Announcement) -> None:
        # keyed by the Announcer (one per node process), which is kept so its id stays unique
        _, told = self.told.setdefault(id(announcer), (announcer, Told()))
        self.stats["commands announced"] += len(ann.commands)
        self.stats["re-checks not announced"] += len(ann.rechecks)
        self.fail(ANNOUNCE, check_announcement(told, ms, ann))

    def on_report(
        self, node: str, new: list[tuple[str, LrmResult]], ms: ManagerStatus, report: ResultReport
    ) -> None:
        self.stats["results announced"] += len(report.results)
        self.stats["re-check answers held"] += len(report.held)
        self.fail(ANNOUNCE, check_report(node, new, ms, report))

    def after_step(self, hw: Hardware) -> None:
        self.steps += 1
        self.fail(SINGLE_LOCATION, check_single_location(hw.running))
        running = {(node, sid) for node, table in hw.running.items() for sid, flag in table.items() if flag}
        if self.running is not None and not self.batch_applied:
            started = running - self.running
            self.stats["starts"] += len(started)
            self.fail(START_UNDER_LOCK, check_starts(started, hw.locks, hw.time))
        self.running = running
        self.batch_applied = False
        ms = hw.manager_status
        if self.last_ms is None:
            self.last_ms = ms
        elif ms is not self.last_ms:
            writer = hw.nodes.get(ms.master_node or "")
            crm_state = writer.crm.state if writer is not None and writer.crm is not None else None
            self.stats["manager writes"] += 1
            self.stats["recoveries"] += sum(
                1
                for sid, sd in self.last_ms.service_status.items()
                if sd.state == "fence" and ms.service_status.get(sid, sd).state != "fence"
            )
            self.fail(SINGLE_MASTER, check_manager_write(ms, hw.locks, crm_state))
            self.fail(
                FENCE_BEFORE_RECOVERY,
                check_fence_exit(
                    self.last_ms.service_status, ms.service_status, ms.master_node or "", hw.locks
                ),
            )
            self.last_ms = ms
        locations = {sid: str(cd.get("node")) for sid, cd in hw.service_raw.items()}
        if self.locations is not None:
            self.stats["moves"] += sum(1 for sid, n in locations.items() if self.locations.get(sid, n) != n)
            self.fail(FENCE_BEFORE_RECOVERY, check_location_change(self.locations, locations, hw.running))
        self.locations = locations
