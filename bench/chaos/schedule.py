"""The fault schedule: the kinds, their weights and hold times, and a seeded :class:`Schedule`.

Also :class:`Options`, what one run is asked to do (``python -m bench chaos``'s options).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Final

# both_kill: SIGKILL ha-watchdog, wait this long, SIGKILL ha-node. In user-space watchdog
# mode nothing is left to kill a node's services when both processes die at the same
# instant (only a kernel watchdog survives that), so the daemon gets this much time to see
# that its watchdog died (its guard sees the socket close at once; the ticker's poll of the
# process every pet_interval is the backup) and take its node down.
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
    "config_corrupt": (2.0, 10.0),
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
    "config_corrupt": 1,
}
KINDS: Final = tuple(WEIGHTS)
DIR_KINDS: Final = tuple(k for k in KINDS if k != "etcd_kill")
SERVICE_KINDS: Final = ("service_kill", "migrate")  # fault one service
CLUSTER_KINDS: Final = ("config_corrupt",)  # fault the cluster's records; the others fault one node
# config_corrupt: which file (the step's pick chooses)
CONFIG_FILES: Final = ("resources.cfg", "rules.cfg", "groups.cfg", "datacenter.cfg")
# config_corrupt: an outage longer than this during the corruption counts as harm (the poller asks
# every ~0.1 s; a service that stopped because of the config is gone for much longer)
CONFIG_HARM_OUTAGE_S: Final = 1.0
COVER_LIMIT: Final = 2.0  # --cover goes on past --minutes, but not past this many times --minutes


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
        return self.kind not in SERVICE_KINDS and self.kind not in CLUSTER_KINDS

    @property
    def config_file(self) -> str:
        return CONFIG_FILES[self.pick % len(CONFIG_FILES)]

    def label(self, sids: list[str]) -> str:
        if self.kind in CLUSTER_KINDS:
            return f"#{self.index} {self.kind} {self.config_file}"
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
