"""Which records a node announces on the bus: commands to the LRMs, results to the master.

The records in the store are the truth; the bus only makes the daemons react
sooner (docs/RUNTIME.md). After the master wrote ``manager_status`` its node
tells every LRM whose request changed (a :class:`Command`); after an LRM wrote
its ``lrm_status`` its node tells the master about the new results (a
:class:`ResultMessage`). Two kinds are deliberately *not* announced:

* a *re-check*: after every result of a ``started`` service the master re-issues
  the same request under a new UID so that the LRM checks the service again
  (BEHAVIOUR.md §5.7 "started"). It differs from the request last announced for
  the service only by its UID; the LRM finds it in manager_status at its next tick.
* the *answer to a re-check*: a successful ``started`` result for a service the
  master already counts as running on this node needs no quick reaction (the
  master only re-issues the re-check); the master reads lrm_status every round.

Announcing those would make master and LRM wake each other in a tight loop
(result -> new UID -> command -> result ...) instead of one re-check per tick.

This module only decides; the node runtime (actors/node.py) delivers the
values, and the simulator runs the same decisions after every write so the
fuzzer can check them (sim/fuzz/invariants.py, invariant ``announce``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ha.records import LrmResult, ManagerStatus, ServiceData
from ha.states import ServiceState

Params = tuple[tuple[str, object], ...]
#: what a request asks of its LRM: (state, node, target, params); the UID aside
What = tuple[str, str, str | None, Params]


def request_of(sd: ServiceData) -> What | None:
    """What ``sd`` asks its node's LRM to do, or None when it asks nothing (no UID or node)."""
    if not sd.uid or not sd.node:
        return None
    params: Params = (("timeout", sd.timeout),) if sd.timeout is not None else ()
    return (sd.state, sd.node, sd.target, params)


@dataclass(frozen=True)
class Command:
    """One request for the LRM on ``destination`` (the service's node)."""

    sid: str
    uid: str
    state: str
    node: str
    target: str | None
    params: Params = ()

    @property
    def destination(self) -> str:
        return self.node

    @property
    def what(self) -> What:
        return (self.state, self.node, self.target, self.params)


@dataclass(frozen=True)
class Announcement:
    """What one manager_status write asks its node to announce.

    ``commands``: every changed request, in sid order; those for this node's own
    LRM are delivered by waking it (:attr:`wake_lrm`), the others are sent
    (:meth:`to_send`). ``superseded``: UIDs announced before and replaced now
    (stop re-sending them). ``rechecks``: sids whose new UID is a re-check and
    is therefore not announced.
    """

    node: str
    commands: tuple[Command, ...] = ()
    superseded: tuple[str, ...] = ()
    rechecks: tuple[str, ...] = ()

    def to_send(self) -> tuple[Command, ...]:
        return tuple(c for c in self.commands if c.destination != self.node)

    @property
    def wake_lrm(self) -> bool:
        return any(c.destination == self.node for c in self.commands)


@dataclass
class Announcer:
    """The master side: remembers what this node announced last, per service.

    One per node process (a new process announces everything afresh). Not
    thread-safe: called by the one thread that writes manager_status.
    """

    node: str
    announced: dict[str, tuple[str, What]] = field(default_factory=dict)  # sid -> (uid, what)

    def after_write(self, ms: ManagerStatus) -> Announcement:
        """manager_status ``ms`` was written: what to announce (and remember it as announced)."""
        current: dict[str, tuple[str, What]] = {}
        commands: list[Command] = []
        superseded: list[str] = []
        rechecks: list[str] = []
        for sid, sd in ms.service_status.items():
            what = request_of(sd)
            if what is None:
                continue
            assert sd.uid is not None
            current[sid] = (sd.uid, what)
            old = self.announced.get(sid)
            if old is not None and old[0] == sd.uid:
                continue
            if old is not None:
                superseded.append(old[0])  # stop re-sending it
                if sd.state == ServiceState.STARTED and old[1] == what:
                    rechecks.append(sid)  # picked up at the LRM's next tick
                    continue
            commands.append(Command(sid, sd.uid, sd.state, sd.node, sd.target, what[3]))
        # a service that left manager_status (or lost its UID) is forgotten; its last
        # command stays in the outbox until its node acknowledges it
        self.announced = current
        return Announcement(self.node, tuple(commands), tuple(superseded), tuple(rechecks))


# -- results (the LRM side) ----------------------------------------------------------


@dataclass(frozen=True)
class ResultMessage:
    """A result for the master; ``destination`` None: no master known (wake the local CRM)."""

    sid: str
    uid: str
    exit_code: int
    destination: str | None


@dataclass(frozen=True)
class ResultReport:
    """What one lrm_status write asks its node to announce."""

    node: str
    results: tuple[ResultMessage, ...] = ()
    held: tuple[str, ...] = ()  # UIDs answering a re-check: not announced

    def to_send(self) -> tuple[ResultMessage, ...]:
        return tuple(r for r in self.results if r.destination not in (None, self.node))

    @property
    def wake_crm(self) -> bool:
        return any(r.destination in (None, self.node) for r in self.results)


def answers_recheck(result: LrmResult, ms: ManagerStatus | None, node: str) -> bool:
    """A successful ``started`` result for a service the master counts as running here."""
    if ms is None or result.state != ServiceState.STARTED or result.exit_code != 0:
        return False
    sd = ms.service_status.get(result.sid)
    return sd is not None and sd.running and sd.node == node


def route_results(node: str, new: Iterable[tuple[str, LrmResult]], ms: ManagerStatus | None) -> ResultReport:
    """Where the new results of ``node``'s LRM go, given the manager_status read (None: unreadable)."""
    master = ms.master_node if ms is not None else None
    results: list[ResultMessage] = []
    held: list[str] = []
    for uid, r in new:
        if answers_recheck(r, ms, node):
            held.append(uid)
        else:
            results.append(ResultMessage(r.sid, uid, r.exit_code, master))
    return ResultReport(node, tuple(results), tuple(held))


@dataclass
class Reporter:
    """The LRM side: which result UIDs were seen already (one per node process)."""

    node: str
    reported: set[str] = field(default_factory=set)

    def take_new(self, results: Mapping[str, LrmResult]) -> list[tuple[str, LrmResult]]:
        """The results not seen at the previous write (and remember these as seen)."""
        new = [(uid, r) for uid, r in results.items() if uid not in self.reported]
        self.reported = set(results)
        return new
