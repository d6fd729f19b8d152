"""The fuzzer's schedule: random commands, generated batch by batch from the live state.

Every command kind is one row of :data:`COMMANDS`: its kind, its weight, what it
acts on (a free node, a service, or nothing chosen up front), which nodes are
eligible, and how it is rendered. :meth:`ScheduleGenerator.batch` draws a kind
by weight, picks an eligible subject and renders the command; a kind with no
eligible subject (or a render that declines) is drawn again, up to 10 times.

The draws happen in a fixed order (kind, subject, then whatever the render
draws), so a seed's schedule only depends on the table and the live state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random
from typing import Literal

from ha.states import CrmState
from sim.fuzz.generate import SERVICE_STATES, Case, weighted
from sim.hardware import Hardware, SimNode
from sim.runner import Simulation

#: total extra time the random ``delay`` commands of one schedule may add
DELAY_BUDGET = 1200
#: commands per generated batch (weights): the small profile, and the large one (20-50 nodes)
BATCH_SIZES = (("0", 8), ("1", 50), ("2", 27), ("3", 15))
LARGE_BATCH_SIZES = (("0", 5), ("1", 30), ("2", 25), ("3", 20), ("5", 12), ("8", 8))


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


def master_alive(hw: Hardware) -> bool:
    info, quorate = hw.get_node_info()
    if not quorate:
        return False
    return any(
        n.crm is not None and n.crm.state == CrmState.MASTER and info[name].online
        for name, n in hw.nodes.items()
    )


@dataclass
class Pick:
    """One batch being generated: what the rows may look at and must mark."""

    gen: ScheduleGenerator
    sim: Simulation
    touched: set[str] = field(default_factory=set)  # nodes a lifecycle command of this batch acts on
    sids_touched: set[str] = field(default_factory=set)
    flags: dict[str, bool] = field(
        default_factory=lambda: {
            "skip": False,
            "delay": False,
            "handover": False,
            "corrupt": False,
        }
    )

    @property
    def rng(self) -> Random:
        return self.gen.rng

    @property
    def hw(self) -> Hardware:
        return self.sim.hw

    def node(self, name: str) -> SimNode:
        return self.sim.hw.nodes[name]


Subject = Literal["node", "service", "none"]


@dataclass(frozen=True)
class CommandKind:
    """One row of the command table.

    ``subject`` "node": a node not yet touched in this batch, for which ``eligible``
    holds, is drawn and marked touched; "service": a service not yet touched, for
    which ``eligible`` holds, is drawn (``render`` marks it); "none": when
    ``eligible(pick, "")`` holds, ``render`` chooses by itself. ``render``
    returns the command line, or None when the draw cannot be used.
    """

    kind: str
    weight: float
    subject: Subject
    render: Callable[[Pick, str], str | None]
    eligible: Callable[[Pick, str], bool] = lambda p, n: True


def _settled(p: Pick, n: str) -> bool:
    return not shutdown_pending(p.node(n))


def _powered(p: Pick, n: str) -> bool:
    return p.node(n).power == "on"


def _daemons_up(p: Pick, n: str) -> bool:
    node = p.node(n)
    return node.power == "on" and node.lrm is not None and node.crm is not None and _settled(p, n)


def _maintenance(action: str) -> Callable[[Pick, str], str]:
    def render(p: Pick, _: str) -> str:
        return f"crm {p.rng.choice(sorted(p.hw.nodes))} {action}-node-maintenance"

    return render


def _skip(p: Pick, _: str) -> str | None:
    if p.flags["skip"] or p.flags["handover"]:
        return None
    p.flags["skip"] = True
    which = p.rng.choice(("crm", "lrm"))
    count = weighted(p.rng, (("1", 6), ("2", 3), ("3", 1)))
    return f"skip-round {which}" if count == "1" and p.rng.random() < 0.5 else f"skip-round {which} {count}"


def _delay(p: Pick, _: str) -> str | None:
    gen = p.gen
    if p.flags["delay"] or gen.delay_left <= 0:
        return None
    p.flags["delay"] = True
    seconds = min(p.rng.choice((0, 10, 30, 60, 120, 200)), gen.delay_left)
    gen.delay_left -= seconds
    return f"delay {seconds}"


def _state(p: Pick, sid: str) -> str | None:
    raw = p.hw.service_raw[sid]
    current = str(raw.get("state") or "disabled")
    new = p.rng.choice([s for s in SERVICE_STATES if s != current])
    # leaving 'ignored' hands a possibly running guest to HA: only under the handover's conditions
    if current == "ignored" and not _handover_ok(p, str(raw["node"])):
        return None
    p.sids_touched.add(sid)
    return f"service {sid} {new}"


def _move(task: str) -> Callable[[Pick, str], str]:
    def render(p: Pick, sid: str) -> str:
        p.sids_touched.add(sid)
        return f"service {sid} {task} {p.rng.choice(sorted(p.hw.nodes))}"

    return render


def _stop(p: Pick, sid: str) -> str:
    p.sids_touched.add(sid)
    return f"service {sid} stop {p.rng.choice((0, 10, 60))}"


def _delete(p: Pick, sid: str) -> str:
    p.sids_touched.add(sid)
    return f"service {sid} delete"


def _add(p: Pick, _: str) -> str | None:
    rng, gen = p.rng, p.gen
    num = rng.randint(100, 9999)
    if num in gen.used:
        return None  # ids are never reused
    node = rng.choice(sorted(p.hw.nodes))
    state = weighted(rng, (("", 3), ("started", 5), ("stopped", 1), ("disabled", 1)))
    running = rng.random() < 0.3 and _handover_ok(p, node)
    gen.used.add(num)
    sid = f"{rng.choice(('vm', 'ct'))}:{num}"
    p.sids_touched.add(sid)
    cmd = f"service {sid} add {node}"
    if state or running:
        cmd += f" {state or 'started'}"
    if running:
        cmd += " 1"
    return cmd


def _config_readable(p: Pick, _: str) -> bool:
    """Administrators' config edits wait while resources.cfg is corrupt (the live tools refuse to
    edit a file that is not UTF-8); in the large profile also after a corruption earlier in the
    same batch (found by its bigger batches, seed 209; the small profile's schedules are kept as
    they were, see docs/fuzzing.md)."""
    return not p.hw.corrupt and not (p.gen.batch_rules and p.flags["corrupt"])


def _corrupt(p: Pick, _: str) -> str | None:
    """Random bytes into resources.cfg (ours, issue #10), until a later ``restore``."""
    if p.hw.corrupt:
        return None
    p.flags["corrupt"] = True
    return f"config resources.cfg corrupt {p.rng.randrange(1 << 30)}"


def _restore(p: Pick, _: str) -> str | None:
    return "config resources.cfg restore" if p.hw.corrupt else None


def _handover_ok(p: Pick, node: str) -> bool:
    """May HA take over a possibly running guest on ``node`` now? (see :class:`ScheduleGenerator`)"""
    sim, n = p.sim, p.node(node)
    ok = (
        node not in p.touched
        and not p.flags["skip"]
        and sim.skip_crm == 0
        and sim.skip_lrm == 0
        and n.power == "on"
        and n.network == "on"
        and n.lrm is not None
        and n.shutdown is None
        and not shutdown_pending(n)
        and master_alive(p.hw)
    )
    if ok:
        p.touched.add(node)  # nothing else may isolate it in this batch
        p.flags["handover"] = True
    return ok


#: the command table; its order is part of the seed -> schedule mapping (the weighted draw)
COMMANDS: tuple[CommandKind, ...] = (
    CommandKind("power-off", 7, "node", lambda p, n: f"power {n} off", _powered),
    CommandKind("power-on", 12, "node", lambda p, n: f"power {n} on", lambda p, n: p.node(n).power == "off"),
    CommandKind(
        "network-off", 6, "node", lambda p, n: f"network {n} off",
        lambda p, n: _powered(p, n) and p.node(n).network == "on",
    ),
    CommandKind(
        "network-on", 10, "node", lambda p, n: f"network {n} on",
        lambda p, n: _powered(p, n) and p.node(n).network == "off",
    ),
    CommandKind("reboot", 5, "node", lambda p, n: f"reboot {n}", _daemons_up),
    CommandKind("shutdown", 4, "node", lambda p, n: f"shutdown {n}", _daemons_up),
    CommandKind(
        "restart-lrm", 4, "node", lambda p, n: f"restart-lrm {n}",
        lambda p, n: _powered(p, n) and p.node(n).lrm is not None and _settled(p, n),
    ),
    CommandKind(
        "crm-stop", 3, "node", lambda p, n: f"crm {n} stop",
        lambda p, n: p.node(n).crm is not None and _settled(p, n),
    ),
    CommandKind(
        "crm-start", 6, "node", lambda p, n: f"crm {n} start",
        lambda p, n: p.node(n).crm is None and _powered(p, n) and p.node(n).shutdown is None,
    ),
    CommandKind("maint-on", 4, "none", _maintenance("enable")),
    CommandKind("maint-off", 5, "none", _maintenance("disable")),
    CommandKind("skip", 3, "none", _skip),
    CommandKind("delay", 4, "none", _delay),
    CommandKind("state", 14, "service", _state, _config_readable),
    CommandKind("migrate", 6, "service", _move("migrate")),
    CommandKind("relocate", 5, "service", _move("relocate")),
    CommandKind("stop", 4, "service", _stop),
    CommandKind("add", 6, "none", _add, _config_readable),
    CommandKind("delete", 3, "service", _delete, _config_readable),
    CommandKind("config-corrupt", 2, "none", _corrupt),
    CommandKind("config-restore", 4, "none", _restore),
)  # fmt: skip
_BY_KIND = {c.kind: c for c in COMMANDS}


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
        # a large cluster (the large profile) gets bigger batches: several faults at one instant
        self.sizes = LARGE_BATCH_SIZES if case.scale else BATCH_SIZES
        # no config edit after a corruption in the same batch (the large profile; _config_readable)
        self.batch_rules = case.scale

    def first_batch(self, nodes: list[str]) -> list[str]:
        if self.rng.random() < 0.8:
            return [f"power {n} on" for n in nodes]
        chosen = sorted(self.rng.sample(nodes, len(nodes) // 2 + 1))
        return [f"power {n} on" for n in chosen]

    def batch(self, sim: Simulation) -> list[str]:
        size = weighted(self.rng, self.sizes)
        p = Pick(self, sim)
        out: list[str] = []
        for _ in range(int(size)):
            for _attempt in range(10):
                cmd = self.command(p)
                if cmd is not None:
                    out.append(cmd)
                    break
        return out

    def command(self, p: Pick) -> str | None:
        """Draw one row of :data:`COMMANDS` and try to render it (None: draw again)."""
        rng = self.rng
        row = _BY_KIND[weighted(rng, ((c.kind, c.weight) for c in COMMANDS))]
        if row.subject == "node":
            free = [n for n in sorted(p.hw.nodes) if n not in p.touched and row.eligible(p, n)]
            if not free:
                return None
            node = rng.choice(free)
            p.touched.add(node)
            return row.render(p, node)
        if row.subject == "service":
            sids = [s for s in sorted(p.hw.service_raw) if s not in p.sids_touched and row.eligible(p, s)]
            if not sids:
                return None
            return row.render(p, rng.choice(sids))
        return row.render(p, "") if row.eligible(p, "") else None
