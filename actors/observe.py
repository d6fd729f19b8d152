"""What the master's LiveEnv learns from the core's writes: metrics and notification events.

The core stays pure: it calls ``Env.send_notification`` for a fence (``FENCE``,
when it marks a node ``fence``) and its acknowledgement (``SUCCEED``, when it took
the node's agent lease; BEHAVIOUR.md §6.3), and writes ``manager_status``. The
:class:`MasterObserver` turns the first into ``fence``/``fenced`` events and the
differences between two written ``manager_status`` into ``recovery`` (a service
left ``fence``/``recovery`` for ``started`` or ``request_stop``: §6.4) and
``error`` events and migration counts. The first status a master reads is the
baseline: a new master reports only what changes under it.

Failover duration: from the moment the lost node was last heard on the bus
(``NodeContext.last_seen``; else when this master first saw it lost) to one of
its services put in ``started`` on another node by this master.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from actors.metrics import NodeMetrics, lost
from actors.notifier import Notifier
from ha.records import ManagerStatus
from ha.states import NodeState, ServiceState

_RECOVERING = frozenset({ServiceState.FENCE, ServiceState.RECOVERY})
_RECOVERED = frozenset({ServiceState.STARTED, ServiceState.REQUEST_STOP})
_MOVES = frozenset({ServiceState.MIGRATE, ServiceState.RELOCATE})


class MasterObserver:
    def __init__(
        self, metrics: NodeMetrics, notifier: Notifier | None, last_seen: Mapping[str, float] | None = None
    ) -> None:
        self.metrics = metrics
        self.notifier = notifier
        self.last_seen: Mapping[str, float] = last_seen if last_seen is not None else {}
        self._services: dict[str, tuple[str, str]] | None = None  # sid -> (state, node); None: no baseline
        self._nodes: dict[str, str] = {}

    def _notify(self, event: str, subject: str, **fields: object) -> None:
        if self.notifier is not None:
            self.notifier.submit(event, subject, **fields)

    def _lost_since(self, node: str) -> float:
        return self.last_seen.get(node) or time.time()

    # -- the core's send_notification ----------------------------------------------------
    def notification(self, prefix: str, text: str, node: str) -> None:
        if prefix == "FENCE":
            self.metrics.fences_started.labels(node).inc()
            self.metrics.node_lost_at(node, self._lost_since(node))
            self._notify("fence", f"FENCE: {text}", node=node, message=text)
        elif prefix == "SUCCEED":
            self.metrics.fences.labels(node).inc()
            self._notify("fenced", f"SUCCEED: {text}", node=node, message=text)

    # -- manager_status as the master read or wrote it -----------------------------------------
    @property
    def needs_baseline(self) -> bool:
        return self._services is None

    def new_term(self) -> None:
        """This node became master: the next status it reads is the baseline."""
        self._services = None

    def baseline(self, ms: ManagerStatus) -> None:
        """The status a (new) master starts from: no events for what it already shows."""
        self._services = {sid: (sd.state, sd.node) for sid, sd in ms.service_status.items()}
        self._nodes = dict(ms.node_status)
        for node, state in self._nodes.items():
            if lost(state) and node in self.last_seen:
                self.metrics.node_lost_at(node, self.last_seen[node])
        self.metrics.saw_manager_status(ms)

    def written(self, ms: ManagerStatus) -> None:
        """After this master wrote ``ms``: count and report what changed since its last write."""
        if self._services is None:
            self.baseline(ms)
            return
        for node, state in ms.node_status.items():
            before = self._nodes.get(node)
            if lost(state) and (before is None or not lost(before)):
                self.metrics.node_lost_at(node, self._lost_since(node))
            elif state == NodeState.ONLINE:
                self.metrics.node_back(node)
        prev = self._services
        now = time.time()
        for sid, sd in ms.service_status.items():
            p = prev.get(sid)
            pstate, pnode = p if p is not None else ("", "")
            if sd.state == pstate:
                continue
            if pstate in _RECOVERING and sd.state in _RECOVERED:
                took = self.metrics.recovered(pnode, now)
                msg = f"service '{sid}' recovered from fenced node '{pnode}' to node '{sd.node}'"
                fields: dict[str, object] = {"sid": sid, "node": pnode, "to_node": sd.node, "state": sd.state}
                if took is not None:
                    fields["failover_seconds"] = round(took, 3)
                was = pstate or None
                self._notify("recovery", f"RECOVERY: {msg}", message=msg, **fields)
            elif sd.state == ServiceState.ERROR:
                self.metrics.service_errors.inc()
                msg = f"service '{sid}' on node '{sd.node}' entered the error state (was '{pstate or 'new'}')"
                was = pstate or None
                self._notify(
                    "error",
                    f"ERROR: {msg}",
                    message=msg,
                    sid=sid,
                    node=sd.node,
                    previous_state=was,
                )
            elif sd.state in _MOVES:
                self.metrics.migrations.labels(sd.state).inc()
        self._services = {sid: (sd.state, sd.node) for sid, sd in ms.service_status.items()}
        self._nodes = dict(ms.node_status)
        self.metrics.saw_manager_status(ms)
