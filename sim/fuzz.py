"""Randomised safety and liveness testing of the simulated HA stack (``ha-sim fuzz``).

A *case* is a random cluster (3-7 nodes, up to 50 ``vm``/``ct`` services, HA groups,
node-affinity rules, a shutdown policy) plus a schedule of command batches. The
schedule is generated *lazily*, at the moment the run loop takes the next batch, so
each command is valid for the cluster's current state (no ``power on`` of a node
that is shutting down, ...). The batches actually applied are recorded, so a case
replays deterministically as a plain reference-format scenario.

After the schedule the cluster is healed (all nodes powered on, network on,
daemons started, maintenance cleared) and must converge within
:data:`LIVENESS_BOUND` virtual seconds.

Invariants (exact formulations and why they are sound: docs/fuzzing.md):

``single-location``        a service is never marked running on two nodes;
``single-master``          every manager_status write is made by the current, unexpired
                           holder of ``ha_manager_lock``;
``fence-before-recovery``  fencing (the master taking a node's agent lock) happens only when
                           none of the services to be recovered still runs there, a service
                           leaves ``fence`` only under that lock, and a service's configured
                           node changes only when it does not run on the old node;
``start-under-lock``       a node starts a guest only while holding its own unexpired agent lock;
``liveness``               after healing, every ``started`` service runs on exactly its
                           configured node and is ``started``; ``stopped``/``disabled`` ones
                           run nowhere and are ``stopped``;
``no-fatal-error``         the simulation never ends with ``exit simulation - ...``;
``crash``                  no Python exception escapes the simulator.
"""

# size: the fuzzer's case and schedule generators, healer, invariant checks and run loop, written against
#   one another; not split yet (the checks and the generators could be modules of their own)

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from random import Random
from typing import Any, SupportsIndex

from ha.config.datacenter import parse_datacenter_json
from ha.constants import LOCK_TIMEOUT
from ha.errors import HaError
from ha.records import ManagerStatus, ServiceData
from ha.states import CrmState
from sim.hardware import Hardware, SimNode
from sim.runner import Observer, RunOptions, Simulation
from sim.scenario import Scenario

#: virtual seconds between the first heal batch and the liveness check
LIVENESS_BOUND = 1500
#: a node still shutting down this long into the heal phase is powered off (a hung shutdown)
STUCK_SHUTDOWN = 300
#: total extra time the random ``delay`` commands of one schedule may add
DELAY_BUDGET = 1200

SINGLE_LOCATION = "single-location"
SINGLE_MASTER = "single-master"
FENCE_BEFORE_RECOVERY = "fence-before-recovery"
LIVENESS = "liveness"
START_UNDER_LOCK = "start-under-lock"
NO_FATAL_ERROR = "no-fatal-error"
CRASH = "crash"
#: fatal simulator errors that are a limitation of the (reference) simulator's model, not of the
#: HA stack: with ``strict`` off such a run counts as *inconclusive*, not as a failure
KNOWN_LIMITATIONS = ("watchdog expired",)
INVARIANTS = (
    SINGLE_LOCATION,
    SINGLE_MASTER,
    FENCE_BEFORE_RECOVERY,
    LIVENESS,
    START_UNDER_LOCK,
    NO_FATAL_ERROR,
    CRASH,
)

MANAGER_LOCK = "ha_manager_lock"
# manager-side states whose services are never fenced nor recovered (§6.3)
NOT_RECOVERED = frozenset({"freeze", "error"})

_LOG_LINE = re.compile(r"^\S+\s+-?\d+\s+(\S+)/crm: (.*)$")
_FENCE_ACK = re.compile(r"^fencing: acknowledged - got agent lock for node '([^']+)'$")


def agent_lock(node: str) -> str:
    return f"ha_agent_{node}_lock"


# -- the case ---------------------------------------------------------------------------------


@dataclass
class GroupSpec:
    id: str
    nodes: dict[str, int | None]
    restricted: bool = False
    nofailback: bool = False


@dataclass
class RuleSpec:
    id: str
    nodes: dict[str, int | None]
    resources: list[str]
    strict: bool = False
    disable: bool = False
    affinity: str | None = None  # positive|negative: a resource-affinity rule (no nodes)


@dataclass
class Case:
    """A cluster and a schedule; everything a run needs besides the (deterministic) heal."""

    seed: int
    hardware: dict[str, dict[str, Any]]
    services: dict[str, dict[str, Any]]
    groups: list[GroupSpec] = field(default_factory=list)
    rules: list[RuleSpec] = field(default_factory=list)
    datacenter: dict[str, Any] = field(default_factory=dict)
    schedule: list[list[str]] = field(default_factory=list)
    # verbatim groups/rules texts (a replayed folder); they win over ``groups``/``rules``
    groups_raw: str | None = None
    rules_raw: str | None = None

    @property
    def nodes(self) -> list[str]:
        return sorted(self.hardware)

    def groups_text(self) -> str | None:
        if self.groups_raw is not None:
            return self.groups_raw
        if not self.groups:
            return None
        out = []
        for g in self.groups:
            text = f"group: {g.id}\n\tnodes {_node_list(g.nodes)}\n"
            if g.restricted:
                text += "\trestricted 1\n"
            if g.nofailback:
                text += "\tnofailback 1\n"
            out.append(text)
        return "\n".join(out)

    def rules_text(self) -> str | None:
        if self.rules_raw is not None:
            return self.rules_raw
        if not self.rules:
            return None
        out = []
        for r in self.rules:
            resources = ",".join(r.resources)
            if r.affinity is not None:
                text = f"resource-affinity: {r.id}\n\tresources {resources}\n\taffinity {r.affinity}\n"
            else:
                text = f"node-affinity: {r.id}\n\tnodes {_node_list(r.nodes)}\n\tresources {resources}\n"
            if r.strict:
                text += "\tstrict 1\n"
            if r.disable:
                text += "\tdisable 1\n"
            out.append(text)
        return "\n".join(out)

    def scenario(self) -> Scenario:
        dc_text = json.dumps(self.datacenter)
        return Scenario(
            path=Path(f"<fuzz seed {self.seed}>"),
            cmdlist=[],
            hardware={n: dict(st) for n, st in self.hardware.items()},
            manager_status={},
            service_config={sid: dict(cd) for sid, cd in self.services.items()},
            groups_text=self.groups_text(),
            rules_text=self.rules_text(),
            datacenter=parse_datacenter_json(dc_text),
            datacenter_raw=json.loads(dc_text),
        )


def _node_list(nodes: dict[str, int | None]) -> str:
    return ",".join(n if p is None else f"{n}:{p}" for n, p in nodes.items())


# -- generating a cluster ---------------------------------------------------------------------

SERVICE_STATES = ("started", "stopped", "disabled", "ignored")


def _weighted(rng: Random, table: Iterable[tuple[str, float]]) -> str:
    items = list(table)
    return rng.choices([k for k, _ in items], weights=[w for _, w in items])[0]


def _node_subset(rng: Random, nodes: list[str], priorities: bool) -> dict[str, int | None]:
    chosen = rng.sample(nodes, rng.randint(1, len(nodes)))
    return {n: (rng.randint(0, 3) if priorities and rng.random() < 0.8 else None) for n in chosen}


def generate_case(seed: int) -> Case:
    """The cluster of ``seed`` (its schedule is generated during the run, see :class:`ScheduleGenerator`)."""
    rng = Random(seed)
    n_nodes = rng.randint(3, 7)
    nodes = [f"node{i}" for i in range(1, n_nodes + 1)]
    hardware: dict[str, dict[str, Any]] = {n: {"power": "off", "network": "off"} for n in nodes}
    if rng.random() < 0.15:  # new enough for the persistent group -> rule migration (§5.14)
        for st in hardware.values():
            st["pve-manager-version"] = "9.0.0~16"

    groups: list[GroupSpec] = []
    for i in range(rng.choice((0, 0, 1, 1, 2, 3))):
        groups.append(
            GroupSpec(
                f"group{i + 1}",
                _node_subset(rng, nodes, rng.random() < 0.5),
                restricted=rng.random() < 0.5,
                nofailback=rng.random() < 0.3,
            )
        )

    n_services = rng.randint(1, 15) if rng.random() < 0.7 else rng.randint(16, 50)
    numbers = rng.sample(range(100, 1000), n_services)
    services: dict[str, dict[str, Any]] = {}
    for num in sorted(numbers):
        sid = f"{rng.choice(('vm', 'vm', 'ct'))}:{num}"
        cd: dict[str, Any] = {"node": rng.choice(nodes)}
        state = _weighted(
            rng,
            (("started", 60), ("stopped", 10), ("disabled", 8), ("ignored", 8), ("", 4), ("enabled", 2)),
        )
        if state:
            cd["state"] = state
        if groups and rng.random() < 0.4:
            cd["group"] = rng.choice(groups).id
        if rng.random() < 0.3:
            cd["max_restart"] = rng.randint(0, 3)
        if rng.random() < 0.3:
            cd["max_relocate"] = rng.randint(0, 3)
        if rng.random() < 0.15:
            cd["failback"] = 0
        services[sid] = cd

    rules: list[RuleSpec] = []
    sids = sorted(services)
    for i in range(rng.choice((0, 0, 1, 1, 2, 3))):
        resources = sorted(rng.sample(sids, min(len(sids), rng.randint(1, 5))))
        rules.append(
            RuleSpec(
                f"rule{i + 1}",
                _node_subset(rng, nodes, rng.random() < 0.5),
                resources,
                strict=rng.random() < 0.5,
                disable=rng.random() < 0.1,
            )
        )

    # Resource affinity. A negative rule only gets services without any node preference (no
    # group, no node-affinity rule, no positive partner) and each service at most one negative
    # rule: with a preference, the reference removes the partners' nodes from the *preferred*
    # class only and finds no node at all when that empties it, even with other nodes free
    # (BEHAVIOUR.md §5.9 step 6; docs/fuzzing.md "Findings") - a liveness limitation by design.
    kinds = [rng.choice(("positive", "negative")) for _ in range(rng.choice((0, 0, 0, 1, 2)))]
    preferred = {sid for sid, cd in services.items() if "group" in cd}
    for r in rules:
        preferred.update(r.resources)
    for i, affinity in enumerate(sorted(kinds, key=lambda k: k != "positive")):
        pool = sids if affinity == "positive" else [s for s in sids if s not in preferred]
        if len(pool) < 2:
            continue
        resources = sorted(rng.sample(pool, min(len(pool), rng.randint(2, 3))))
        preferred.update(resources)
        rules.append(
            RuleSpec(f"affinity{i + 1}", {}, resources, affinity=affinity, disable=rng.random() < 0.1)
        )

    datacenter: dict[str, Any] = {}
    policy = rng.choice((None, "conditional", "freeze", "failover", "migrate"))
    if policy is not None:
        datacenter["ha"] = {"shutdown_policy": policy}
    if rng.random() < 0.2:
        datacenter["crs"] = {"ha-rebalance-on-start": 1}
    return Case(seed, hardware, services, groups, rules, datacenter)


# -- generating the schedule, batch by batch, from the live state ------------------------------


def shutdown_pending(node: SimNode) -> bool:
    """A reboot/shutdown, LRM restart or CRM stop is under way on ``node``.

    Read from the daemons, not from the runner's ``crm_stop``/``lrm_restart`` flags: a
    power-off can leave those set on a node whose new daemons have no request pending.
    """
    return (
        node.shutdown is not None
        or (node.lrm is not None and node.lrm.shutdown_request is not None)
        or (node.crm is not None and node.crm.shutdown_request)
    )


def _master_alive(hw: Hardware) -> bool:
    info, quorate = hw.get_node_info()
    if not quorate:
        return False
    return any(
        n.crm is not None and n.crm.state == CrmState.MASTER and info[name].online
        for name, n in hw.nodes.items()
    )


class ScheduleGenerator:
    """Random commands that are valid for the cluster's state at the moment they are applied.

    Preconditions kept (see docs/fuzzing.md, "What is generated"):

    * node lifecycle commands never overlap a pending shutdown/reboot/LRM restart the
      simulator cannot combine with them (they would be fatal ``not implemented`` errors);
    * service ids are never reused once deleted (a deleted running guest keeps running
      unmanaged, a new config with the same id would be a second guest);
    * HA takes over a possibly running guest (``add ... 1``, leaving ``ignored``) only
      while its node is online, its LRM alive and a master is running, so the node's LRM
      holds its agent lock before it can be isolated. Otherwise the guest runs on a node
      nothing can fence, which is outside the HA design, like ``manual-migrate``.
    """

    def __init__(self, rng: Random, case: Case) -> None:
        self.rng = rng
        self.used = {int(sid.split(":")[1]) for sid in case.services}
        self.delay_left = DELAY_BUDGET

    def first_batch(self, nodes: list[str]) -> list[str]:
        if self.rng.random() < 0.8:
            return [f"power {n} on" for n in nodes]
        chosen = sorted(self.rng.sample(nodes, len(nodes) // 2 + 1))
        return [f"power {n} on" for n in chosen]

    def batch(self, sim: Simulation) -> list[str]:
        rng = self.rng
        size = _weighted(rng, (("0", 8), ("1", 50), ("2", 27), ("3", 15)))
        touched: set[str] = set()
        sids_touched: set[str] = set()
        flags = {"skip": False, "delay": False, "handover": False}
        out: list[str] = []
        for _ in range(int(size)):
            for _attempt in range(10):
                cmd = self._command(sim, touched, sids_touched, flags)
                if cmd is not None:
                    out.append(cmd)
                    break
        return out

    def _command(
        self, sim: Simulation, touched: set[str], sids_touched: set[str], flags: dict[str, bool]
    ) -> str | None:
        rng, hw = self.rng, sim.hw
        nodes = sorted(hw.nodes)
        free = [n for n in nodes if n not in touched]

        def pick(cands: list[str]) -> str | None:
            return rng.choice(cands) if cands else None

        def settled(n: str) -> bool:
            return not shutdown_pending(hw.nodes[n])

        kind = _weighted(
            rng,
            (
                ("power-off", 7),
                ("power-on", 12),
                ("network-off", 6),
                ("network-on", 10),
                ("reboot", 5),
                ("shutdown", 4),
                ("restart-lrm", 4),
                ("crm-stop", 3),
                ("crm-start", 6),
                ("maint-on", 4),
                ("maint-off", 5),
                ("skip", 3),
                ("delay", 4),
                ("state", 14),
                ("migrate", 6),
                ("relocate", 5),
                ("stop", 4),
                ("add", 6),
                ("delete", 3),
            ),
        )
        node: str | None
        if kind == "power-off":
            node = pick([n for n in free if hw.nodes[n].power == "on"])
            if node is None:
                return None
            touched.add(node)
            return f"power {node} off"
        if kind == "power-on":
            node = pick([n for n in free if hw.nodes[n].power == "off"])
            if node is None:
                return None
            touched.add(node)
            return f"power {node} on"
        if kind in ("network-off", "network-on"):
            want = "on" if kind == "network-off" else "off"
            node = pick([n for n in free if hw.nodes[n].power == "on" and hw.nodes[n].network == want])
            if node is None:
                return None
            touched.add(node)
            return f"network {node} {'off' if want == 'on' else 'on'}"
        if kind in ("reboot", "shutdown"):
            node = pick(
                [
                    n
                    for n in free
                    if hw.nodes[n].power == "on"
                    and hw.nodes[n].lrm is not None
                    and hw.nodes[n].crm is not None
                    and settled(n)
                ]
            )
            if node is None:
                return None
            touched.add(node)
            return f"{kind} {node}"
        if kind == "restart-lrm":
            node = pick(
                [n for n in free if hw.nodes[n].power == "on" and hw.nodes[n].lrm is not None and settled(n)]
            )
            if node is None:
                return None
            touched.add(node)
            return f"restart-lrm {node}"
        if kind == "crm-stop":
            node = pick(
                [n for n in free if hw.nodes[n].crm is not None and not shutdown_pending(hw.nodes[n])]
            )
            if node is None:
                return None
            touched.add(node)
            return f"crm {node} stop"
        if kind == "crm-start":
            node = pick(
                [
                    n
                    for n in free
                    if hw.nodes[n].crm is None and hw.nodes[n].power == "on" and hw.nodes[n].shutdown is None
                ]
            )
            if node is None:
                return None
            touched.add(node)
            return f"crm {node} start"
        if kind in ("maint-on", "maint-off"):
            node = rng.choice(nodes)
            action = "enable" if kind == "maint-on" else "disable"
            return f"crm {node} {action}-node-maintenance"
        if kind == "skip":
            if flags["skip"] or flags["handover"]:
                return None
            flags["skip"] = True
            which = rng.choice(("crm", "lrm"))
            count = _weighted(rng, (("1", 6), ("2", 3), ("3", 1)))
            return (
                f"skip-round {which}"
                if count == "1" and rng.random() < 0.5
                else f"skip-round {which} {count}"
            )
        if kind == "delay":
            if flags["delay"] or self.delay_left <= 0:
                return None
            flags["delay"] = True
            seconds = rng.choice((0, 10, 30, 60, 120, 200))
            seconds = min(seconds, self.delay_left)
            self.delay_left -= seconds
            return f"delay {seconds}"
        if kind == "add":
            return self._add(sim, touched, sids_touched, flags)

        sid = pick([s for s in sorted(hw.service_raw) if s not in sids_touched])
        if sid is None:
            return None
        if kind == "state":
            current = str(hw.service_raw[sid].get("state") or "disabled")
            new = rng.choice([s for s in SERVICE_STATES if s != current])
            if current == "ignored" and not self._handover_ok(
                sim, str(hw.service_raw[sid]["node"]), touched, flags
            ):
                return None
            sids_touched.add(sid)
            return f"service {sid} {new}"
        if kind in ("migrate", "relocate"):
            sids_touched.add(sid)
            return f"service {sid} {kind} {rng.choice(nodes)}"
        if kind == "stop":
            sids_touched.add(sid)
            return f"service {sid} stop {rng.choice((0, 10, 60))}"
        # delete
        sids_touched.add(sid)
        return f"service {sid} delete"

    def _handover_ok(self, sim: Simulation, node: str, touched: set[str], flags: dict[str, bool]) -> bool:
        hw = sim.hw
        n = hw.nodes[node]
        ok = (
            node not in touched
            and not flags["skip"]
            and sim.skip_crm == 0
            and sim.skip_lrm == 0
            and n.power == "on"
            and n.network == "on"
            and n.lrm is not None
            and n.shutdown is None
            and not shutdown_pending(n)
            and _master_alive(hw)
        )
        if ok:
            touched.add(node)  # nothing else may isolate it in this batch
            flags["handover"] = True
        return ok

    def _add(
        self, sim: Simulation, touched: set[str], sids_touched: set[str], flags: dict[str, bool]
    ) -> str | None:
        rng, hw = self.rng, sim.hw
        num = rng.randint(100, 9999)
        if num in self.used:
            return None
        node = rng.choice(sorted(hw.nodes))
        state = _weighted(rng, (("", 3), ("started", 5), ("stopped", 1), ("disabled", 1)))
        running = rng.random() < 0.3 and self._handover_ok(sim, node, touched, flags)
        self.used.add(num)
        sid = f"{rng.choice(('vm', 'ct'))}:{num}"
        sids_touched.add(sid)
        cmd = f"service {sid} add {node}"
        if state or running:
            cmd += f" {state or 'started'}"
        if running:
            cmd += " 1"
        return cmd


# -- healing ----------------------------------------------------------------------------------


class Healer:
    """Deterministic heal commands for the cluster's current state (no randomness)."""

    def __init__(self) -> None:
        self.pending_since: dict[str, int] = {}

    def batch(self, hw: Hardware) -> list[str]:
        out: list[str] = []
        request = hw.manager_status.node_request or {}
        for name in sorted(hw.nodes):
            node = hw.nodes[name]
            pending = shutdown_pending(node)
            if node.power == "off":
                out.append(f"power {name} on")
            elif pending:
                since = self.pending_since.setdefault(name, hw.time)
                if hw.time - since >= STUCK_SHUTDOWN:
                    out.append(f"power {name} off")
                    self.pending_since.pop(name, None)
                continue
            else:
                if node.network == "off":
                    out.append(f"network {name} on")
                if node.crm is None:
                    out.append(f"crm {name} start")
            self.pending_since.pop(name, None)
            if (
                request.get(name, {}).get("maintenance")
                or f"enable-node-maintenance {name}\n" in hw.crm_commands
            ):
                out.append(f"crm {name} disable-node-maintenance")
        return out


def cluster_healthy(hw: Hardware) -> bool:
    for node in hw.nodes.values():
        if node.power != "on" or node.network != "on" or node.crm is None or node.lrm is None:
            return False
        if shutdown_pending(node):
            return False
    return not any((r or {}).get("maintenance") for r in (hw.manager_status.node_request or {}).values())


# -- invariant checks (pure functions over plain data; the tests feed them hand-made states) ----


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


# -- one run ----------------------------------------------------------------------------------


class _Stop(Exception):
    """Ends a run from a hook; deliberately not an HaError (the runner catches those)."""


class _Finished(_Stop):
    pass


class ViolationFound(_Stop):
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

    def fail(self, invariant: str, errors: list[str]) -> None:
        if errors:
            raise ViolationFound(Violation(invariant, "; ".join(errors), self._hw().time))

    def on_line(self, line: str) -> None:
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


@dataclass
class RunResult:
    case: Case
    violation: Violation | None
    steps: int
    virtual_time: int
    batches: list[list[str]]
    heal_index: int
    converged_after: int | None
    log: list[str]
    limitation: str | None = None
    stats: Counter[str] = field(default_factory=Counter)


class _Driver:
    """Feeds the run loop its batches: schedule (static or generated), then heal, then the check."""

    def __init__(
        self,
        case: Case,
        generator: ScheduleGenerator | None,
        n_random: int,
        heal_index: int | None,
    ) -> None:
        self.case = case
        self.generator = generator
        self.n_random = n_random
        self.heal_index = heal_index if heal_index is not None else len(case.schedule) + n_random
        self.healer = Healer()
        self.sim: Simulation | None = None
        self.checker: Checker | None = None
        self.index = 0
        self.record: list[list[str]] = []
        self.heal_start: int | None = None
        self.converged_since: int | None = None

    def next_batch(self) -> list[str]:
        assert self.sim is not None
        hw = self.sim.hw
        k = self.index
        self.index += 1
        if k == self.heal_index:
            self.heal_start = hw.time
        if self.heal_start is not None:
            ok = cluster_healthy(hw) and not check_liveness(
                hw.service_raw, hw.running, hw.manager_status.service_status
            )
            if not ok:
                self.converged_since = None
            elif self.converged_since is None:
                self.converged_since = hw.time
            if hw.time >= self.heal_start + LIVENESS_BOUND:
                errors = check_liveness(hw.service_raw, hw.running, hw.manager_status.service_status)
                if not cluster_healthy(hw):
                    errors.insert(0, "the cluster could not be healed (a node still down or shutting down)")
                if errors:
                    raise ViolationFound(
                        Violation(
                            LIVENESS, f"{LIVENESS_BOUND} s after healing began: " + "; ".join(errors), hw.time
                        )
                    )
                raise _Finished
        if k < len(self.case.schedule):
            batch = list(self.case.schedule[k])
        elif k < self.heal_index and self.generator is not None:
            batch = self.generator.first_batch(self.case.nodes) if k == 0 else self.generator.batch(self.sim)
        else:
            batch = self.healer.batch(hw)
        self.record.append(batch)
        if self.checker is not None:
            self.checker.batch_applied = True  # the next step is this batch (not a daemon's work)
        return batch


class _Feed(list[list[str]]):
    """Stands in for the runner's cmdlist: every batch is asked from the driver when it is due."""

    def __init__(self, driver: _Driver) -> None:
        super().__init__()
        self.driver = driver

    def __bool__(self) -> bool:
        return True

    def pop(self, index: SupportsIndex = -1) -> list[str]:
        return self.driver.next_batch()


def run_case(
    case: Case,
    *,
    generate: bool = False,
    n_random: int = 0,
    heal_index: int | None = None,
    strict: bool = False,
) -> RunResult:
    """Run ``case``; with ``generate`` its schedule is extended by ``n_random`` generated batches."""
    generator = ScheduleGenerator(Random(case.seed * 7919 + 1), case) if generate else None
    driver = _Driver(case, generator, n_random if generate else 0, heal_index)
    holder: list[Hardware] = []
    checker = Checker(lambda: holder[0])
    try:
        sim = Simulation(
            case.scenario(), RunOptions(), out=checker.on_line, observer=Observer(checker.after_step)
        )
    except HaError as e:  # the simulator refuses the generated world: a generator bug
        rejected = Violation(NO_FATAL_ERROR, f"scenario rejected: {e}", 0)
        return RunResult(case, rejected, 0, 0, [], driver.heal_index, None, [])
    holder.append(sim.hw)
    driver.sim = sim
    driver.checker = checker
    sim.cmdlist = _Feed(driver)
    violation: Violation | None = None
    try:
        sim.run()
    except _Finished:
        pass
    except ViolationFound as e:
        violation = e.violation
    except Exception as e:  # a bug in the simulated stack: report it like a violation
        violation = Violation(CRASH, f"{type(e).__name__}: {e}", sim.hw.time)
    else:
        last = sim.hw.lines[-1] if sim.hw.lines else ""
        reason = last.split("exit simulation - ", 1)[-1].strip() if "exit simulation - " in last else last
        violation = Violation(NO_FATAL_ERROR, f"simulation ended: {reason}", sim.hw.time)
    limitation = None
    if violation is not None and violation.invariant == NO_FATAL_ERROR and not strict:
        if any(known in violation.message for known in KNOWN_LIMITATIONS):
            limitation, violation = violation.message, None
    converged = None
    if driver.heal_start is not None and driver.converged_since is not None:
        converged = driver.converged_since - driver.heal_start
    schedule_len = min(driver.heal_index, len(driver.record))
    recorded = replace(case, schedule=[list(b) for b in driver.record[:schedule_len]])
    return RunResult(
        case=recorded,
        violation=violation,
        steps=checker.steps,
        virtual_time=sim.hw.time,
        batches=driver.record,
        heal_index=driver.heal_index,
        converged_after=converged,
        log=sim.hw.lines,
        limitation=limitation,
        stats=checker.stats,
    )


def fuzz_one(seed: int, strict: bool = False) -> RunResult:
    """Generate and run the case of ``seed``."""
    case = generate_case(seed)
    n_random = Random(seed * 104729 + 7).randint(3, 25)
    return run_case(case, generate=True, n_random=n_random + 1, strict=strict)


@dataclass
class FuzzSummary:
    runs: int = 0
    steps: int = 0
    virtual_seconds: int = 0
    wall_seconds: float = 0.0
    max_converge: int = 0
    failures: list[RunResult] = field(default_factory=list)
    inconclusive: list[int] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)


def fuzz(
    seed: int,
    runs: int,
    on_failure: Callable[[RunResult], bool] | None = None,
    strict: bool = False,
) -> FuzzSummary:
    """Run seeds ``seed .. seed+runs-1``; ``on_failure`` returns False to stop early."""
    summary = FuzzSummary()
    start = time.perf_counter()
    for s in range(seed, seed + runs):
        result = fuzz_one(s, strict)
        summary.runs += 1
        if result.limitation is not None:
            summary.inconclusive.append(s)
        summary.steps += result.steps
        summary.virtual_seconds += result.virtual_time
        summary.stats.update(result.stats)
        if result.converged_after is not None:
            summary.max_converge = max(summary.max_converge, result.converged_after)
        if result.violation is not None:
            summary.failures.append(result)
            if on_failure is not None and not on_failure(result):
                break
    summary.wall_seconds = time.perf_counter() - start
    return summary
