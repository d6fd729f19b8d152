"""The CRM master's view of node states (BEHAVIOUR.md §6.1-§6.3)."""

from __future__ import annotations

from ha.constants import REFERENCE_TIMING, Timing
from ha.env import Env, NodeInfo
from ha.states import NODE_TRANSITIONS, LrmMode, NodeState, check_transition


class NodeStatus:
    """Node state map plus the per-node "last seen online" times."""

    def __init__(self, env: Env, status: dict[str, str], timing: Timing = REFERENCE_TIMING) -> None:
        self.env = env
        self.timing = timing
        self.status = status
        # starts empty on every takeover (§5.1)
        self.last_online: dict[str, float] = {}

    def get_node_state(self, node: str) -> str:
        # A never-seen node is 'unknown' but is not added to the map by a lookup:
        # the oracle shows such a node missing from the group-migration node list
        # until a state change records it (gen-0054).
        return self.status.get(node) or NodeState.UNKNOWN

    def node_is_online(self, node: str) -> bool:
        return self.get_node_state(node) == NodeState.ONLINE

    def node_is_operational(self, node: str) -> bool:
        return self.node_is_online(node) or self.get_node_state(node) == NodeState.MAINTENANCE

    def node_is_offline_delayed(self, node: str, delay: float | None = None) -> bool:
        """§6.2: not online for at least ``delay`` (default: the fence delay) seconds.

        The first call for a node with no known last-online time only starts the clock.
        """
        if delay is None:
            delay = self.timing.fence_delay
        if self.get_node_state(node) == NodeState.ONLINE:
            return False
        now = self.env.get_time()
        last = self.last_online.get(node)
        if last is None:
            seen = self.env.get_node_last_seen(node)
            if seen is None:
                self.last_online[node] = now
                return False
            # the fence delay only filters blips; safety comes from the lease (§6.3)
            last = self.last_online[node] = min(seen, now)
        return now - last >= delay

    def list_nodes(self) -> list[str]:
        return sorted(self.status)

    def list_online_nodes(self) -> list[str]:
        return [n for n in sorted(self.status) if self.status[n] == NodeState.ONLINE]

    def set_node_state(self, node: str, state: str) -> None:
        """The one place a node state changes; logs the reference line."""
        last = self.get_node_state(node)
        if state == last:
            return
        check_transition(NODE_TRANSITIONS, last, state, "node state")
        self.status[node] = state
        self.env.log("info", f"node '{node}': state changed from '{last}' => '{state}'")

    def update(self, node_info: dict[str, NodeInfo], lrm_modes: dict[str, str]) -> None:
        """§6.1: fold the membership view and the LRM modes into the node states."""
        now = self.env.get_time()
        for node in sorted(node_info):
            if not node_info[node].online:
                continue
            self.last_online[node] = now
            mode = lrm_modes.get(node, "unknown")
            state = self.get_node_state(node)
            if state == NodeState.ONLINE:
                if mode == LrmMode.MAINTENANCE:
                    self.set_node_state(node, NodeState.MAINTENANCE)
            elif state in (NodeState.UNKNOWN, NodeState.GONE):
                self.set_node_state(node, NodeState.ONLINE)
            elif state == NodeState.MAINTENANCE:
                if mode != LrmMode.MAINTENANCE:
                    self.set_node_state(node, NodeState.ONLINE)
            # fence: unchanged until fenced
        for node in sorted(self.status):
            info = node_info.get(node)
            if info is not None and info.online:
                continue
            state = self.get_node_state(node)
            if state == NodeState.ONLINE:
                self.set_node_state(node, NodeState.UNKNOWN)
            elif state == NodeState.MAINTENANCE:
                if lrm_modes.get(node, "unknown") != LrmMode.MAINTENANCE:
                    self.set_node_state(node, NodeState.UNKNOWN)
            elif state == NodeState.UNKNOWN:
                if info is None:  # not a cluster member anymore
                    self.set_node_state(node, NodeState.GONE)
            elif state == NodeState.GONE and self.node_is_offline_delayed(
                node, self.timing.gone_delete_delay
            ):
                self.env.log("notice", f"deleting gone node '{node}', not a cluster member anymore.")
                self.last_online.pop(node, None)
                del self.status[node]

    def fence_node(self, node: str) -> bool:
        """§6.3: mark ``fence``; fencing succeeds once the master holds the node's agent lock.

        # SAFETY: the agent lock of a node can only be taken after its lease
        # expired, i.e. after its watchdog must have fired (lock lifetime >
        # watchdog timeout). Only then may its services be recovered.
        """
        if self.get_node_state(node) != NodeState.FENCE:
            self.set_node_state(node, NodeState.FENCE)
            self.env.send_notification("FENCE", f"Try to fence node '{node}'", node)
        if not self.env.get_ha_agent_lock(node):
            return False
        msg = f"fencing: acknowledged - got agent lock for node '{node}'"
        self.env.log("info", msg)
        self.set_node_state(node, NodeState.UNKNOWN)
        self.env.send_notification("SUCCEED", msg, node)
        return True
